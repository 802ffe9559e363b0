"""Crash safety: SIGKILL ``cdr-pipeline process`` in every stage of a batch, run it again, and
the contract tables equal those of one clean run; nothing half-written is ever readable.

CI: one kill in each of the six stages on a small batch (the scenario fixture). Full
(``CDR_RELIABILITY_FULL=1``): a campaign of at least 20 kills (``CDR_RELIABILITY_KILLS``,
default 24) at stages drawn at random, over a 1,000,000-row batch (``CDR_RELIABILITY_ROWS``),
each followed by a rerun to completion and a comparison.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

from cdr_assets_tests.reliability.harness import (
    FULL,
    STAGES,
    Kill,
    Scenario,
    build_scenario,
    env_int,
    kill_in_stage,
    process_in_process,
    seed_for,
)

ATTEMPTS = 4
CI_SPREAD = 0.6  # a CI kill lands in the first 60% of its stage (as long as the clean run's)
CAMPAIGN_SPREAD = 0.9


@dataclass
class Trial:
    kills: list[Kill] = field(default_factory=list)
    recovery_code: int | None = None
    differences: dict[str, str] = field(default_factory=dict)


def _delay(
    scenario: Scenario, stage: str, rng: random.Random, attempt: int, spread: float
) -> float:
    if stage == "reading" and spread < CAMPAIGN_SPREAD:
        # At once: the batch has recorded its files and moved none of them yet.
        return 0.0
    seconds = scenario.stage_seconds.get(stage, 0.5)
    if stage == "publishing the serving file":
        spread /= 3  # the file is complete a moment after the last view is counted
    return rng.uniform(0.0, spread) * seconds / (2**attempt)


def kill_once(
    scenario: Scenario, stage: str, rng: random.Random, spread: float = CI_SPREAD
) -> list[Kill]:
    """Restore the scenario and kill a run in ``stage``; retried (sooner) when the run had
    already left the stage. Returns every attempt, the last one the kill that counts."""
    attempts = []
    for attempt in range(ATTEMPTS):
        scenario.restore()
        kill = kill_in_stage(scenario, stage, _delay(scenario, stage, rng, attempt, spread))
        attempts.append(kill)
        if stage == "reading" and spread < CAMPAIGN_SPREAD and kill.files_moved:
            continue  # CI kills while the batch has recorded its files and moved none
        if kill.killed and not kill.overshot:
            return attempts
    raise AssertionError(f"no kill landed in {stage} in {ATTEMPTS} attempts: {attempts}")


def rerun_and_compare(scenario: Scenario, trial: Trial) -> None:
    trial.recovery_code, _ = process_in_process(scenario.env)
    trial.differences = scenario.differences()


# --- CI: one kill in each stage ---------------------------------------------------------------
# Every test kills its own run (pytest-xdist may run any two tests in different workers).


def _stage_id(stage: str) -> str:
    return stage.replace(" ", "-")


@pytest.fixture(scope="module")
def crash_seed() -> int:
    return seed_for("test_crash")


def _kill(scenario: Scenario, stage: str, crash_seed: int, purpose: str) -> Trial:
    rng = random.Random(f"{crash_seed}-{stage}-{purpose}")
    trial = Trial(kills=kill_once(scenario, stage, rng))
    print(f"{stage}: {trial.kills[-1]}")
    return trial


def assert_nothing_half_written_is_visible(kill: Kill, scenario: Scenario) -> None:
    assert kill.killed
    assert kill.visibility is not None
    assert kill.visibility.problems == []
    # What a reader gets is the serving file of the earlier batch, whole.
    assert kill.visibility.served_counts["cdrs"] == scenario.base_counts["cdrs"]
    assert kill.visibility.served_counts["landed_files"] == scenario.base_counts["landed_files"]
    if kill.stage == "publishing the serving file":
        # The new file was being written beside it, under a name no reader opens.
        assert any(name.startswith(".cdr.duckdb.") for name in kill.visibility.temporary_files)


def assert_rerun_gives_the_clean_tables(trial: Trial, scenario: Scenario) -> None:
    rerun_and_compare(scenario, trial)
    assert trial.recovery_code == 0
    assert trial.differences == {}
    assert not list(scenario.landing.iterdir())


@pytest.mark.parametrize("stage", STAGES, ids=_stage_id)
def test_a_kill_leaves_nothing_half_written_and_a_rerun_gives_the_clean_tables(
    scenario: Scenario, crash_seed: int, stage: str
) -> None:
    trial = _kill(scenario, stage, crash_seed, "both")
    assert_nothing_half_written_is_visible(trial.kills[-1], scenario)
    assert_rerun_gives_the_clean_tables(trial, scenario)


# --- full: the campaign ----------------------------------------------------------------------


@dataclass
class Campaign:
    seed: int
    rows: int
    clean_seconds: float
    trials: list[Trial]

    def summary(self) -> list[dict[str, object]]:
        rows = []
        for stage in STAGES:
            ours = [t for t in self.trials if t.kills[-1].stage == stage]
            rows.append(
                {
                    "stage": stage,
                    "kills": len(ours),
                    "rerun identical": sum(1 for t in ours if not t.differences),
                    "half-written visible": sum(
                        1 for t in ours for k in t.kills if k.visibility and k.visibility.problems
                    ),
                }
            )
        return rows


def stage_plan(rng: random.Random, kills: int) -> list[str]:
    """Stages drawn at random, in shuffled rounds: every six kills cover every stage."""
    plan: list[str] = []
    while len(plan) < kills:
        round_ = list(STAGES)
        rng.shuffle(round_)
        plan += round_
    return plan[:kills]


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> Campaign:
    if not FULL:
        pytest.skip("the kill campaign runs with CDR_RELIABILITY_FULL=1 (docs/reliability.md)")
    seed = seed_for("kill campaign")
    rng = random.Random(seed)
    rows = env_int("CDR_RELIABILITY_ROWS", 1_000_000)
    scenario = build_scenario(tmp_path_factory.mktemp("campaign"), rows)
    print(f"clean run of {rows} rows: {scenario.clean_seconds:.1f} s; {scenario.stage_seconds}")
    trials = []
    for number, stage in enumerate(stage_plan(rng, env_int("CDR_RELIABILITY_KILLS", 24)), 1):
        trial = Trial(kills=kill_once(scenario, stage, rng, spread=CAMPAIGN_SPREAD))
        rerun_and_compare(scenario, trial)
        kill = trial.kills[-1]
        print(
            f"kill {number}: {stage}, {kill.delay:.2f} s in, order assigned "
            f"{kill.landing_order_assigned}, files moved {kill.files_moved}: rerun "
            f"{'identical' if not trial.differences else trial.differences}"
        )
        trials.append(trial)
    result = Campaign(seed, rows, scenario.clean_seconds, trials)
    report = os.environ.get("CDR_RELIABILITY_REPORT")
    if report:
        Path(report).write_text(
            json.dumps(
                {
                    "seed": seed,
                    "rows": rows,
                    "clean_seconds": round(scenario.clean_seconds, 1),
                    "summary": result.summary(),
                    "trials": [asdict(t) for t in trials],
                },
                indent=1,
                default=str,
            )
        )
    for line in result.summary():
        print(line)
    return result


def test_campaign_kills_at_least_20_times_and_no_reader_sees_half_written_files(
    campaign: Campaign,
) -> None:
    assert len(campaign.trials) >= 20
    assert {t.kills[-1].stage for t in campaign.trials} == set(STAGES)
    for trial in campaign.trials:
        for kill in trial.kills:
            assert kill.visibility is not None and kill.visibility.problems == []


def test_campaign_every_rerun_gives_the_tables_of_a_clean_run(campaign: Campaign) -> None:
    failed = [(t.kills[-1].stage, t.differences) for t in campaign.trials if t.differences]
    assert failed == []
    assert all(t.recovery_code == 0 for t in campaign.trials)
