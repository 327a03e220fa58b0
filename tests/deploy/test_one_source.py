"""One command line per role. The local run (deploy/Procfile, which `scimbus run` and so
every stack test starts), compose.yaml and the Kubernetes manifests all run ``scimbus
<role>`` with the same options; only the values differ (addresses, ports, process count).
Here the Procfile is the source, and the others are held to its shape."""

from __future__ import annotations

import re
import shlex

import pytest
import yaml
from honcho.environ import parse_procfile

from services.runtime.roles import NAMES as ROLES
from tests.support.deploy_checks import ROOT, render_kustomization


# Options only a gateway on the same host can use: the reader's per-process unix sockets,
# which nginx lists one by one (in containers each pod or replica is one server already).
SAME_HOST_ONLY = ("--worker-sockets",)


def command_shape(argv: list[str]) -> list[str]:
    """The command with option values blanked: ``front --bind 0.0.0.0:8000`` → ``front --bind …``;
    a repeatable option given again (the local run's second ``--bind``: the gateway's unix
    socket) counts once; ``SAME_HOST_ONLY`` options are left out."""
    shape, expect_value, skip_value = [], False, False
    for token in argv:
        if token in SAME_HOST_ONLY:
            skip_value, expect_value = True, False
            continue
        if skip_value and not token.startswith("--"):
            skip_value = False
            continue
        skip_value = False
        if expect_value and not token.startswith("--"):
            shape.append("…")
            if shape[-4:-2] == shape[-2:]:
                del shape[-2:]
        else:
            shape.append(token)
        expect_value = token.startswith("--") and "=" not in token
    return shape


def procfile_commands() -> dict[str, list[str]]:
    processes = parse_procfile((ROOT / "deploy/Procfile").read_text()).processes
    commands = {}
    for name, line in processes.items():
        argv = shlex.split(line)
        if argv[0] == "scimbus":
            commands[name] = argv[1:]
    return commands


def compose_commands() -> dict[str, list[str]]:
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    return {name: services[name]["command"] for name in [*ROLES, "migrate"]}


@pytest.fixture(scope="module")
def kubernetes_commands() -> dict[str, list[str]]:
    docs = render_kustomization(ROOT / "k8s/base")
    commands = {}
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            container = doc["spec"]["template"]["spec"]["containers"][0]
            if container["image"].startswith("scimbus"):
                commands[doc["metadata"]["name"].removeprefix("scimbus-")] = container.get("command", []) + container["args"]
    return commands


def test_the_procfile_starts_every_serving_role_through_scimbus():
    assert set(procfile_commands()) == set(ROLES)
    assert all(procfile_commands()[role][0] == role for role in ROLES)


def test_compose_runs_the_procfile_command_of_each_role():
    local = procfile_commands()
    for role, argv in compose_commands().items():
        if role == "migrate":
            assert argv == ["migrate"]
            continue
        assert command_shape(argv) == command_shape(local[role]), role


def test_kubernetes_runs_the_procfile_command_of_each_role(kubernetes_commands):
    local = procfile_commands()
    assert set(kubernetes_commands) == {*ROLES, "migrate"}
    for role, argv in kubernetes_commands.items():
        if role == "migrate":
            assert argv == ["migrate"]
            continue
        assert command_shape(argv) == command_shape(local[role]), role


def test_kubernetes_and_compose_give_each_role_the_same_values(kubernetes_commands):
    assert kubernetes_commands == compose_commands()


def test_the_image_runs_scimbus_with_the_role_as_argument_and_checks_health_per_role():
    dockerfile = (ROOT / "deploy/Dockerfile").read_text()
    assert re.search(r'^ENTRYPOINT \["scimbus"\]$', dockerfile, re.M)
    assert re.search(r'^HEALTHCHECK .* CMD \["scimbus", "health"\]$', dockerfile, re.M)
    assert re.search(r"^USER 10001:10001$", dockerfile, re.M)
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, re.M).group(1)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base), "pin the base image to a patch release"
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    for role in ROLES:
        assert services[role]["healthcheck"]["test"] == ["CMD", "scimbus", "health", role]


def test_a_drifted_command_changes_its_shape():
    assert command_shape(["worker", "--processes", "2", "--metrics-port", "8603"]) == \
        command_shape(["worker", "--processes", "${SCIM_WORKER_PROCESSES}", "--metrics-port", "${X}"])
    assert command_shape(["worker", "--processes", "2"]) != \
        command_shape(["worker", "--processes", "2", "--metrics-port", "8603"])
    assert command_shape(["front", "--bind", "x"]) != command_shape(["front", "--listen", "x"])


def test_every_role_is_a_package_of_services_and_a_scimbus_command(capsys):
    from services.cli import main

    for role in ROLES:
        assert (ROOT / "services" / role / "__init__.py").exists(), role
        with pytest.raises(SystemExit) as exit:
            main([role, "--help"])
        assert exit.value.code == 0, role
    assert {p.name for p in (ROOT / "services").iterdir() if (p / "__init__.py").exists()} == {*ROLES, "cli", "runtime"}


def test_every_option_the_deployments_pass_is_one_the_cli_accepts(capsys):
    from services.cli import main

    for role, argv in compose_commands().items():
        with pytest.raises(SystemExit):
            main([role, "--help"])
        help_text = capsys.readouterr().out
        for option in (t for t in argv if t.startswith("--")):
            assert option in help_text, f"scimbus {role} has no option {option}"
