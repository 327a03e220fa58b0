"""The bench shows a phase's progress as ``scimbus resync`` does (services/cli/progress.py):
in a log, plain lines, never a bar redrawn with carriage returns."""

from __future__ import annotations

from bench.load import Progress


def test_a_phase_logs_plain_progress_lines_ending_with_the_total(tmp_path):
    with open(tmp_path / "log", "w") as stream, Progress("phase fill (x4)", 250, stream=stream) as progress:
        for _ in range(250):
            progress.done += 1
    lines = (tmp_path / "log").read_text().splitlines()
    assert lines[-1] == "bench: phase fill (x4): 250/250"
    assert all("\r" not in line and line.startswith("bench: phase fill (x4): ") for line in lines)
