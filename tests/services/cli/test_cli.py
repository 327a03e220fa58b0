"""The ``scimbus`` command as an operator meets it: help that reads cleanly, a version, and a
bad setting reported in one line with exit status 2 before anything starts, never a
traceback. Run as a process, as an operator runs it (``python -m services.cli``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.cli import command
from services.cli.progress import Progress
from services.runtime.roles import NAMES

ROOT = Path(__file__).resolve().parents[3]


def scimbus(*args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SCIM_")}
    return subprocess.run([sys.executable, "-m", "services.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**environ, "SCIM_VAR_DIR": env.pop("SCIM_VAR_DIR", "/nonexistent"), **env},
                          timeout=60)


def _commands() -> list[list[str]]:
    """Every command and subcommand, as argv."""
    out = []

    def walk(group, path):
        for name, cmd in group.commands.items():
            out.append([*path, name])
            if hasattr(cmd, "commands"):
                walk(cmd, [*path, name])
    walk(command.scimbus, [])
    return out


def test_every_role_and_command_group_is_a_command():
    names = {argv[0] for argv in _commands()}
    assert set(NAMES) <= names
    assert {"deliveries", "resync", "tokens", "audit", "init", "health", "migrate", "token", "run"} <= names


@pytest.mark.parametrize("argv", [[], *_commands()], ids=lambda argv: " ".join(argv) or "scimbus")
def test_every_help_reads_cleanly_without_rest_markup(argv, capsys):
    with pytest.raises(SystemExit) as done:
        command.main([*argv, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"Usage: scimbus {' '.join(argv)}".rstrip())
    assert "``" not in text and ":class:" not in text and ":func:" not in text


def test_the_version_is_the_installed_packages():
    from importlib.metadata import version

    done = scimbus("--version")
    assert (done.returncode, done.stdout.strip()) == (0, f"scimbus {version('scimbus')}")


def test_a_bad_setting_is_one_line_naming_variable_value_and_expectation_with_status_2():
    done = scimbus("token", SCIM_JOB_TIMEOUT="abc")
    assert done.returncode == 2
    assert done.stderr.strip() == "scimbus: SCIM_JOB_TIMEOUT='abc' is not a valid int: expected a whole number above 0"
    assert "Traceback" not in done.stderr


def test_a_value_out_of_its_range_is_refused_before_the_role_starts():
    done = scimbus("front", SCIM_HTTP_WORKERS="0")
    assert done.returncode == 2
    assert done.stderr.strip() == "scimbus: SCIM_HTTP_WORKERS must be between 1 and 256, not 0"


def test_help_works_whatever_the_environment_holds():
    for argv in (["--help"], ["front", "--help"], ["worker", "--help"]):
        done = scimbus(*argv, SCIM_HTTP_WORKERS="x", SCIM_WORKER_PROCESSES="many")
        assert done.returncode == 0, (argv, done.stderr)
        assert "Usage: scimbus" in done.stdout


def test_a_wrong_option_is_a_usage_error_with_status_2():
    done = scimbus("worker", "--processes", "-1")
    assert done.returncode == 2
    assert "--processes" in done.stderr and "Traceback" not in done.stderr


def test_progress_is_plain_lines_when_not_on_a_terminal(tmp_path):
    with open(tmp_path / "log", "w") as stream, Progress("resync appdb", stream=stream, every=3600) as progress:
        for done in range(0, 101):
            progress(done, 100)
    assert (tmp_path / "log").read_text().splitlines() == ["resync appdb: 0/100", "resync appdb: 100/100"]
