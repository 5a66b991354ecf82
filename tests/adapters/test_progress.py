"""The trainer's step lines, as it writes them into a job's log and the loop reads them."""

from __future__ import annotations

from adapters.progress import TrainProgress, parse_step_line, step_line


def test_a_step_line_reads_back_as_the_progress_it_reports() -> None:
    line = step_line(3, 10, 1.23456, 24.6)
    assert line == "tuneloop-step step=3 total=10 loss=1.2346 eta_s=25"
    assert parse_step_line(line + "\r\n") == TrainProgress(step=3, total=10, loss=1.2346, eta_s=25)
    odd = parse_step_line(step_line(1, 1, float("nan"), -3))
    assert odd is not None and odd.loss is None and odd.eta_s == 0  # JSON has no NaN


def test_other_lines_and_forged_ones_are_not_progress() -> None:
    for line in ("loading model", "tuneloop-step step=1 total=0 loss=1 eta_s=1",
                 "tuneloop-step step=1 total=2 loss=1 eta_s=1 extra", "x tuneloop-step step=1",
                 "tuneloop-step step=99999999999 total=2 loss=1 eta_s=1"):  # fmt: skip
        assert parse_step_line(line) is None, line
