"""The invariant check of the chaos suite can fail: each broken invariant, fed to it, is reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor import Job, Status

from .sidelog import Kill, Run, check_runs, read_runs

pytestmark = pytest.mark.chaos


def _job(job_id: str, status: Status = Status.SUCCEEDED, token: str = "t1", attempts: int = 1) -> Job:
    return Job(id=job_id, task="chaos.work", queue="default", priority=2, args=[], kwargs={}, status=status,
               created_at=0.0, scheduled_at=0.0, attempts=attempts, result={"token": token, "pid": 1})  # fmt: skip


def test_the_side_effect_log_is_read_into_runs(tmp_path: Path) -> None:
    log = tmp_path / "side.log"
    log.write_text("start a t1 10 1.0\nstart a t2 11 2.0\ndone a 11 3.0\n")
    runs = read_runs(log)
    assert runs["a"] == [Run("a", "t1", 10, 1.0, None), Run("a", "t2", 11, 2.0, 3.0)]


def test_a_clean_run_passes_and_a_duplicate_on_a_killed_process_is_explained() -> None:
    runs = {"a": [Run("a", "t0", 10, 1.0), Run("a", "t1", 11, 2.0, 3.0)]}
    verdict = check_runs({"a"}, {"a": _job("a", attempts=2)}, runs, [Kill(10, 1.5)])
    assert (verdict.problems, verdict.duplicate_runs, verdict.explained) == ([], 1, 1)


@pytest.mark.parametrize(
    ("jobs", "runs", "kills", "problem"),
    [
        ({}, {}, [], "lost"),
        ({"a": _job("a", Status.RUNNING)}, {"a": [Run("a", "t1", 11, 2.0)]}, [], "not succeeded"),
        (
            {"a": _job("a", attempts=2)},
            {"a": [Run("a", "t0", 10, 1.0), Run("a", "t1", 11, 2.0, 3.0)]},
            [],
            "not explained",
        ),
        (
            {"a": _job("a", attempts=2)},
            {"a": [Run("a", "t0", 10, 1.0), Run("a", "t1", 11, 2.0, 3.0)]},
            [Kill(10, 0.5)],
            "not explained",
        ),  # killed before that run started: not the reason
        ({"a": _job("a", token="t9")}, {"a": [Run("a", "t1", 11, 2.0, 3.0)]}, [], "names 0 of its runs"),
        (
            {"a": _job("a", attempts=1)},
            {"a": [Run("a", "t0", 10, 1.0), Run("a", "t1", 11, 2.0, 3.0)]},
            [Kill(10, 1.5)],
            "attempts=1",
        ),
    ],
)
def test_each_broken_invariant_is_reported(
    jobs: dict[str, Job], runs: dict[str, list[Run]], kills: list[Kill], problem: str
) -> None:
    verdict = check_runs({"a"}, jobs, runs, kills)
    assert any(problem in text for text in verdict.problems), verdict.problems


def test_a_duplicate_in_flight_during_an_outage_is_explained() -> None:
    runs = {"a": [Run("a", "t0", 10, 1.0, 5.5), Run("a", "t1", 11, 30.0, 31.0)]}
    jobs = {"a": _job("a", attempts=1)}  # the crash lost the first run's outcome (and claim) commits
    assert check_runs({"a"}, jobs, runs, [], outages=[(5.0, 6.0)]).problems == []
    assert check_runs({"a"}, jobs, runs, [], outages=[(25.0, 26.0)], outage_margin=1.0).problems != []
