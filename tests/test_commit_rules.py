"""The commit-msg hook holds the house rule for commits (issue 20, item 8)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

HOOK = Path(__file__).resolve().parents[1] / ".githooks" / "commit-msg"


def _check(tmp_path: Path, message: str) -> subprocess.CompletedProcess:
    path = tmp_path / "COMMIT_EDITMSG"
    path.write_text(message)
    return subprocess.run([str(HOOK), str(path)], capture_output=True, text=True)


def test_a_short_subject_with_a_body_is_accepted(tmp_path):
    assert _check(tmp_path, "Purge applied writes past the job's life\n\nThey grew 315M rows a year.\n").returncode == 0


@pytest.mark.parametrize(("message", "why"), [
    ("A" * 72 + "\n\nbody\n", "under 72"),
    ("Fix the reader; add a bench\n\nbody\n", "one change per commit"),
    ("Fix the reader\n", "add a body"),
    ("Fix the reader\n\n# only git's comments\n", "add a body"),
])
def test_a_long_joined_or_bodyless_message_is_refused_saying_why(tmp_path, message, why):
    checked = _check(tmp_path, message)
    assert checked.returncode == 1 and why in checked.stderr


def test_merges_pass_as_git_writes_them(tmp_path):
    assert _check(tmp_path, "Merge branch 'h18a' into main, with a subject git chose at its own length\n").returncode == 0
