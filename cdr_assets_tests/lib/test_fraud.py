"""Fraud rules: injected cases found, clean traffic quiet, snooze, re-runs, configuration."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cdr_assets.lib import fraud
from cdr_assets.lib.fraud import Alert
from cdr_assets.lib.fraud_config import (
    FraudConfig,
    FraudConfigError,
    config_path,
    load_config,
    parse_config,
)
from cdr_assets.lib.fraud_scenarios import InjectedCase, ScenarioOptions, generate_scenario
from cdr_assets.lib.warehouse import Warehouse, read_parquet_sql

DEFAULTS = FraudConfig()
PROJECT_ROOT = Path(__file__).resolve().parents[2]

# -- hand-made calls -----------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    call_id: str
    caller: str | None
    called: str
    start: datetime
    seconds: int = 60
    answered: bool = True
    carrier: str = "carrier_001"
    call_type: str = "national"
    country: str | None = "GB"
    number_type: str = "mobile"
    cost: str = "0.0200"
    margin: str = "0.0100"
    flags: tuple[str, ...] = ()
    zone_offset_hours: int | None = 0  # local_start_time = start + offset; None: unknown


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def cdrs_table(calls: Sequence[Call]) -> pa.Table:
    money = pa.decimal128(38, 4)
    ts = pa.timestamp("us", tz="UTC")
    return pa.table(
        {
            "call_id": pa.array([c.call_id for c in calls], pa.string()),
            "caller_number": pa.array([c.caller for c in calls], pa.string()),
            "called_number": pa.array([c.called for c in calls], pa.string()),
            "start_time": pa.array([c.start for c in calls], ts),
            "end_time": pa.array([c.start + timedelta(seconds=c.seconds) for c in calls], ts),
            "duration_seconds": pa.array(
                [c.seconds if c.answered else 0 for c in calls], pa.int64()
            ),
            "carrier_id": pa.array([c.carrier for c in calls], pa.string()),
            "call_type": pa.array([c.call_type for c in calls], pa.string()),
            "disposition": pa.array(
                ["ANSWERED" if c.answered else "NO_ANSWER" for c in calls], pa.string()
            ),
            "call_date": pa.array([c.start.date() for c in calls], pa.date32()),
            "called_country": pa.array([c.country for c in calls], pa.string()),
            "called_number_type": pa.array([c.number_type for c in calls], pa.string()),
            "flags": pa.array([list(c.flags) for c in calls], pa.list_(pa.string())),
            "cost": pa.array([Decimal(c.cost) for c in calls], money),
            "revenue": pa.array([Decimal(c.cost) + Decimal(c.margin) for c in calls], money),
            "margin": pa.array([Decimal(c.margin) for c in calls], money),
            "rate_prefix": pa.array(["44" for _ in calls], pa.string()),
            "local_start_time": pa.array(
                [
                    None
                    if c.zone_offset_hours is None
                    else (c.start + timedelta(hours=c.zone_offset_hours)).replace(tzinfo=None)
                    for c in calls
                ],
                pa.timestamp("us"),
            ),
        }
    )


def write_calls(warehouse: Warehouse, calls: Iterable[Call], batch: str = "b1") -> None:
    by_day: dict[str, list[Call]] = {}
    for c in calls:
        by_day.setdefault(c.start.date().isoformat(), []).append(c)
    for day, rows in by_day.items():
        path = warehouse.cdrs_file(day, batch)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(cdrs_table(rows), path)


def burst(
    caller: str, start: datetime, calls: int, every_seconds: int = 30, prefix: str = "w"
) -> list[Call]:
    """One-ring calls: unanswered, each to a new number."""
    return [
        Call(
            f"{prefix}-{caller}-{start:%Y%m%d%H%M}-{i}",
            caller,
            f"+4477009{i:05d}",
            start + timedelta(seconds=i * every_seconds),
            seconds=0,
            answered=False,
        )
        for i in range(calls)
    ]


def background(day: date, callers: int = 20, calls_per_caller: int = 24) -> list[Call]:
    """Quiet ordinary traffic: each caller one call an hour to a regular number."""
    out = []
    for c in range(callers):
        for h in range(calls_per_caller):
            start = datetime(day.year, day.month, day.day, h, (7 * c) % 60, tzinfo=UTC)
            out.append(Call(f"bg-{day}-{c}-{h}", f"+44200000{c:04d}", f"+4420999{c:05d}", start))
    return out


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    return Warehouse(tmp_path / "warehouse")


def raised(warehouse: Warehouse, day: str, config: FraudConfig = DEFAULTS) -> list[Alert]:
    return fraud.refresh_day(warehouse, day, config).raised


# -- the generated scenario -------------------------------------------------------------

SCENARIO = ScenarioOptions(rows_per_day=20_000, days=10, inject_days=(7, 8, 9), seed=11)


@dataclass(frozen=True)
class Run:
    warehouse: Warehouse
    cases: list[InjectedCase]
    alerts: dict[str, list[dict[str, Any]]]  # day -> rows as read back


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Run:
    warehouse = Warehouse(tmp_path_factory.mktemp("scenario") / "warehouse")
    cases = generate_scenario(warehouse, SCENARIO)
    alerts = {}
    for offset in range(SCENARIO.days):
        day = SCENARIO.day(offset)
        result = fraud.refresh_day(warehouse, day, DEFAULTS)
        assert result.path is not None
        alerts[day] = fraud.read_alerts([result.path])
    return Run(warehouse, cases, alerts)


def matches(case: InjectedCase, row: dict[str, Any]) -> bool:
    start = datetime.fromisoformat(row["window_start"])
    end = datetime.fromisoformat(row["window_end"])
    return (
        (row["rule"], row["subject_type"], row["subject"])
        == (case.rule, case.subject_type, case.subject)
        and row["call_date"] == case.day
        and case.overlaps(start, end)
    )


def test_the_scenario_injects_every_rule_three_times_at_different_hours_and_days(
    scenario: Run,
) -> None:
    for rule in fraud.RULES:
        mine = [c for c in scenario.cases if c.rule == rule]
        assert len(mine) >= 3, rule
        assert len({c.day for c in mine}) >= 3, rule
        assert len({c.window_start.hour for c in mine}) >= 3, rule


def test_every_injected_case_is_found_with_its_rule_and_subject(scenario: Run) -> None:
    missed = [
        c
        for c in scenario.cases
        if not any(matches(c, row) for row in scenario.alerts.get(c.day, []))
    ]
    assert missed == []


def test_no_false_alarm_on_clean_days_and_none_away_from_injected_cases(scenario: Run) -> None:
    injected_days = {SCENARIO.day(d) for d in SCENARIO.inject_days}
    for day, rows in scenario.alerts.items():
        if day not in injected_days:
            assert rows == [], day
            continue
        for row in rows:
            if any(matches(c, row) for c in scenario.cases):
                continue
            # An injected event may also show as a traffic anomaly of the same hour: a
            # one-ring burst lowers its market's answer rate, an outage every destination's.
            start = datetime.fromisoformat(row["window_start"])
            end = datetime.fromisoformat(row["window_end"])
            assert row["rule"] == "traffic_anomaly", row["summary"]
            assert any(c.day == day and c.overlaps(start, end) for c in scenario.cases), row


def test_alerts_carry_their_metrics_baseline_and_sample_calls(scenario: Run) -> None:
    day = SCENARIO.day(7)
    rows = scenario.alerts[day]
    with duckdb.connect() as con:
        files = scenario.warehouse.table_files_for_day(day)
        known = {
            r[0] for r in con.execute(f"SELECT call_id FROM {read_parquet_sql(files)}").fetchall()
        }
    by_rule = {r["rule"]: r for r in rows}
    for row in rows:
        assert row["severity"] in ("WARN", "ERROR")
        assert 1 <= len(row["sample_call_ids"]) <= 20
        assert set(row["sample_call_ids"]) <= known
        assert row["summary"] and row["metrics"] and row["baseline"]
    wangiri = by_rule["wangiri"]
    assert wangiri["metrics"]["distinct_called"] >= 25
    assert wangiri["baseline"]["min_distinct_called"] == 25
    irsf = by_rule["irsf"]
    assert irsf["metrics"]["destinations"] == ["+881"]
    assert irsf["severity"] == "ERROR"
    # Money stays exact: spend travels as a decimal string.
    assert Decimal(irsf["metrics"]["spend"]) >= Decimal("100")
    spend = by_rule["spend_velocity"]
    assert Decimal(spend["metrics"]["off_hours_spend"]) == Decimal(
        spend["metrics"]["international_spend"]
    )  # 02:00 local: every call outside office hours
    assert spend["baseline"]["active_hours"] >= 8
    outage = next(r for r in rows if r["subject"] == "carrier_002")
    assert "asr" in outage["metrics"]["fired"] and outage["severity"] == "ERROR"


def test_rerunning_a_day_gives_the_same_alert_ids_and_rows(scenario: Run) -> None:
    day = SCENARIO.day(8)
    path = fraud.alerts_file(scenario.warehouse, day)
    before = path.read_bytes()
    result = fraud.refresh_day(scenario.warehouse, day, DEFAULTS)
    assert [a.alert_id for a in result.raised] == [r["alert_id"] for r in scenario.alerts[day]]
    assert fraud.read_alerts([path]) == scenario.alerts[day]
    assert path.read_bytes() == before


def test_each_files_traffic_cells_are_kept_and_a_late_file_adds_its_own(
    scenario: Run, tmp_path: Path
) -> None:
    cells = scenario.warehouse.state_dir / "fraud_traffic_cells"
    assert sorted(p.name for p in cells.iterdir()) == [SCENARIO.day(d) for d in range(10)]
    day = SCENARIO.day(9)
    (kept,) = (cells / day).glob("*.parquet")
    # Without any kept cells, the same alerts.
    copy = Warehouse(tmp_path / "copy")
    (copy.root / "cdrs").mkdir(parents=True)
    for folder in scenario.warehouse.cdrs_dir.iterdir():
        (copy.cdrs_dir / folder.name).symlink_to(folder)
    assert fraud.detect_day(copy, day, DEFAULTS) == fraud.detect_day(
        scenario.warehouse, day, DEFAULTS
    )
    # A late file for the day: its own cells are aggregated, the day's earlier ones kept.
    late = [Call("late-1", "+441234", "+442345", at(f"{day}T12:00:00"))]
    folder = copy.cdrs_dir / f"call_date={day}"
    folder.unlink()
    folder.mkdir()
    for path in (scenario.warehouse.cdrs_dir / f"call_date={day}").glob("*.parquet"):
        (folder / path.name).symlink_to(path)
    fraud.detect_day(copy, day, DEFAULTS)
    before = list((copy.state_dir / "fraud_traffic_cells" / day).glob("*.parquet"))
    write_calls(copy, late, batch="zz_late")
    incremental = fraud.detect_day(copy, day, DEFAULTS)
    after = list((copy.state_dir / "fraud_traffic_cells" / day).glob("*.parquet"))
    assert len(before) == 1 and len(after) == 2 and set(before) < set(after)
    assert before[0].name == kept.name  # the same file gives the same key
    assert {p.name.split(".")[0] for p in after} == {kept.name.split(".")[0], "zz_late"}
    # The kept cells summed with the late file's: the alerts of cells made from scratch.
    shutil.rmtree(copy.state_dir / "fraud_traffic_cells")
    assert fraud.detect_day(copy, day, DEFAULTS) == incremental


def copy_of(run: Run, tmp_path: Path) -> Warehouse:
    """A copy of the scenario's warehouse whose last days were refreshed (in the copy: its
    files are other files, so its first refresh judges every caller)."""
    copy = Warehouse(tmp_path / "copy")
    shutil.copytree(run.warehouse.root, copy.root, symlinks=True)
    for offset in range(7, SCENARIO.days):
        assert fraud.refresh_day(copy, SCENARIO.day(offset), DEFAULTS).callers_judged is None
    return copy


def callers_of(warehouse: Warehouse, day: str, n: int) -> list[str]:
    with duckdb.connect() as con:
        rows = con.sql(
            "SELECT DISTINCT caller_number FROM "
            f"{read_parquet_sql(warehouse.table_files_for_day(day))} "
            f"WHERE caller_number IS NOT NULL ORDER BY 1 LIMIT {n}"
        ).fetchall()
    return [r[0] for r in rows]


def test_a_late_file_judges_only_its_callers_and_gives_the_alerts_of_a_full_refresh(
    scenario: Run, tmp_path: Path
) -> None:
    copy = copy_of(scenario, tmp_path)
    day, next_day = SCENARIO.day(8), SCENARIO.day(9)
    ordinary = callers_of(copy, day, 1)[0]
    alerted = next(r["subject"] for r in scenario.alerts[day] if r["rule"] == "wangiri")
    late = burst(ordinary, at(f"{day}T16:00:00"), 40, prefix="late")  # a new wangiri
    late += [
        Call("late-alerted", alerted, "+442071234567", at(f"{day}T17:00:00")),
        Call("late-anonymous", None, "+442071234567", at(f"{day}T18:00:00"), seconds=5 * 3600),
    ]
    write_calls(copy, late, batch="zz_late")

    results = {d: fraud.refresh_day(copy, d, DEFAULTS) for d in (day, next_day)}
    # The callers of the late file (one without a number), in its day and the next one.
    assert {d: r.callers_judged for d, r in results.items()} == {day: 3, next_day: 3}
    got = {d: fraud.read_alerts([r.path]) for d, r in results.items() if r.path}
    assert any(r["rule"] == "wangiri" and r["subject"] == ordinary for r in got[day])
    assert any(r["rule"] == "long_call" and r["subject"] == "(no caller number)" for r in got[day])
    assert got[day] != scenario.alerts[day]

    shutil.rmtree(copy.state_dir / fraud.CANDIDATES_DIR)  # every caller judged again
    for d in (day, next_day):
        again = fraud.refresh_day(copy, d, DEFAULTS)
        assert again.callers_judged is None and again.path is not None
        assert fraud.read_alerts([again.path]) == got[d], d


def test_anything_but_added_files_judges_every_caller_again(scenario: Run, tmp_path: Path) -> None:
    copy = copy_of(scenario, tmp_path)
    day = SCENARIO.day(9)
    unchanged = fraud.refresh_day(copy, day, DEFAULTS)
    assert unchanged.callers_judged == 0
    assert unchanged.path and fraud.read_alerts([unchanged.path]) == scenario.alerts[day]
    # Other thresholds.
    stricter = parse_config({"wangiri": {"min_short_calls": 31}})
    assert fraud.refresh_day(copy, day, stricter).callers_judged is None
    assert fraud.refresh_day(copy, day, stricter).callers_judged == 0
    # A file of the window rewritten (here: of the day before), or removed.
    (earlier,) = copy.table_files_for_day(SCENARIO.day(8))
    os.utime(earlier, ns=(earlier.stat().st_atime_ns, earlier.stat().st_mtime_ns + 1))
    assert fraud.refresh_day(copy, day, stricter).callers_judged is None
    earlier.unlink()
    assert fraud.refresh_day(copy, day, stricter).callers_judged is None
    # Kept candidates in another layout (a later release's, a damaged file): all again.
    (copy.state_dir / fraud.CANDIDATES_DIR / day / "state.json").write_text(
        json.dumps({"candidates": "x.parquet", "signature": {"files": ["not", "a", "map"]}})
    )
    assert fraud.refresh_day(copy, day, stricter).callers_judged is None
    # A day without calls any more keeps no candidates.
    for path in copy.table_files_for_day(day):
        path.unlink()
    assert fraud.refresh_day(copy, day, stricter).path is None
    assert not (copy.state_dir / fraud.CANDIDATES_DIR / day).exists()


def test_alert_ids_are_distinct_and_stable_functions_of_rule_subject_and_window(
    scenario: Run,
) -> None:
    rows = [r for day in scenario.alerts.values() for r in day]
    assert len({r["alert_id"] for r in rows}) == len(rows)
    again = fraud.detect_day(scenario.warehouse, SCENARIO.day(9), DEFAULTS)
    assert {a.alert_id for a in again} >= {r["alert_id"] for r in scenario.alerts[SCENARIO.day(9)]}


def test_a_clean_million_call_day_raises_no_alert(tmp_path: Path) -> None:
    """Seven trailing days for the baselines, then the judged day: 8M calls of clean
    traffic (about 45 s on 2 busy vCPUs, mostly generating the days)."""
    warehouse = Warehouse(tmp_path / "warehouse")
    options = ScenarioOptions(rows_per_day=1_000_000, days=8, inject_days=(), seed=23)
    assert generate_scenario(warehouse, options) == []
    assert fraud.detect_day(warehouse, options.day(7), DEFAULTS) == []


# -- the rules, on hand-made calls -----------------------------------------------------------

D0 = date(2026, 11, 16)  # a Monday


def day(n: int) -> date:
    return D0 + timedelta(days=n)


def test_wangiri_needs_many_distinct_numbers_and_mostly_short_calls(warehouse: Warehouse) -> None:
    calls = [*background(D0)]
    calls += burst("+23276000001", at("2026-11-16T10:00:00"), 40)  # fires
    calls += burst("+23276000002", at("2026-11-16T12:00:00"), 20)  # too few
    # A dialler that reaches people: 40 unanswered calls among 200 answered ones.
    office = "+442000999999"
    calls += burst(office, at("2026-11-16T14:00:00"), 40, every_seconds=60)
    calls += [
        Call(f"office-{i}", office, f"+4420888{i:05d}", at("2026-11-16T14:00:00"), 120)
        for i in range(200)
    ]
    write_calls(warehouse, calls)
    alerts = raised(warehouse, D0.isoformat())
    assert [(a.rule, a.subject, a.severity) for a in alerts] == [
        ("wangiri", "+23276000001", "WARN")
    ]


def test_a_wangiri_burst_across_midnight_is_raised_once(warehouse: Warehouse) -> None:
    # 20 calls before midnight, 20 after: the 30th call (after midnight) fires.
    across = burst("+23276000003", at("2026-11-16T23:50:00"), 40)
    # 40 calls before midnight fire on that day; 10 more after it continue the episode.
    before = burst("+23276000004", at("2026-11-16T23:20:00"), 40)
    after = burst("+23276000004", at("2026-11-17T00:05:00"), 10, prefix="x")
    write_calls(warehouse, [*background(D0), *background(day(1)), *across, *before, *after])
    first = raised(warehouse, D0.isoformat())
    second = raised(warehouse, day(1).isoformat())
    assert [a.subject for a in first] == ["+23276000004"]
    assert [a.subject for a in second] == ["+23276000003"]
    assert second[0].window_start == at("2026-11-16T23:50:00")


def test_a_wangiri_burst_split_by_the_clock_hour_fires(warehouse: Warehouse) -> None:
    # 30 calls two minutes apart from 10:31 to 11:29: 15 in each clock hour, all within one
    # 60-minute window. The same 30 calls spread over the day never fill a window.
    split = burst("+23276000005", at("2026-11-16T10:31:00"), 30, every_seconds=120)
    spread = burst("+23276000006", at("2026-11-16T00:30:00"), 30, every_seconds=45 * 60)
    write_calls(warehouse, [*background(D0), *split, *spread])
    alerts = raised(warehouse, D0.isoformat())
    assert [(a.rule, a.subject) for a in alerts] == [("wangiri", "+23276000005")]
    assert alerts[0].window_start == at("2026-11-16T10:31:00")


def test_irsf_counts_high_risk_prefixes_and_premium_rate_numbers(warehouse: Warehouse) -> None:
    def calls(caller: str, called: str, number_type: str, hour: int) -> list[Call]:
        return [
            Call(
                f"irsf-{caller}-{i}",
                caller,
                f"{called}{i:04d}",
                datetime(2026, 11, 16, hour, 5 * i, tzinfo=UTC),
                seconds=15 * 60,
                call_type="international",
                country=None,
                number_type=number_type,
                cost="4.5000",
            )
            for i in range(6)
        ]

    write_calls(
        warehouse,
        [
            *background(D0),
            *calls("+12025550001", "+88216", "mobile", 3),  # +882 is on the list
            *calls("+12025550002", "+4490912", "premium_rate", 9),
            *calls("+12025550003", "+3361234", "mobile", 15),  # France: not high risk
        ],
    )
    alerts = raised(warehouse, D0.isoformat())
    assert [(a.rule, a.subject, a.severity) for a in alerts] == [
        ("irsf", "+12025550001", "WARN"),
        ("irsf", "+12025550002", "WARN"),
    ]
    off = parse_config({"irsf": {"premium_rate": False, "high_risk_prefixes": []}})
    assert fraud.detect_day(warehouse, D0.isoformat(), off) == []


def spend_calls(caller: str, start: datetime, zone_offset: int | None, cost: str) -> list[Call]:
    return [
        Call(
            f"pbx-{caller}-{start:%d%H}-{i}",
            caller,
            f"+63917000{i:04d}",
            start + timedelta(minutes=4 * i),
            seconds=600,
            call_type="international",
            country="PH",
            cost=cost,
            zone_offset_hours=zone_offset,
        )
        for i in range(6)
    ]


def history(caller: str, hours: int) -> list[Call]:
    """``hours`` past hours with one small domestic call each, over the week before D0."""
    return [
        Call(
            f"hist-{caller}-{h}",
            caller,
            "+442079460000",
            datetime(2026, 11, 9 + h % 7, 9 + h // 7, 0, tzinfo=UTC),
        )
        for h in range(hours)
    ]


def test_spend_velocity_needs_history_and_weights_off_hours_up(warehouse: Warehouse) -> None:
    # 6 calls of 2.00 = 12.00 in an hour: above 20.00 only when weighted x2 off hours.
    night = spend_calls("+442000000101", at("2026-11-16T02:00:00"), 0, "2.0000")
    office = spend_calls("+442000000102", at("2026-11-16T11:00:00"), 0, "2.0000")
    newcomer = spend_calls("+442000000103", at("2026-11-16T02:00:00"), 0, "2.0000")
    calls = [*night, *office, *newcomer]
    calls += history("+442000000101", 10) + history("+442000000102", 10)
    calls += history("+442000000103", 7)  # one hour short of min_baseline_hours
    for n in range(-7, 1):
        calls += background(day(n), callers=3)
    write_calls(warehouse, calls)
    alerts = raised(warehouse, D0.isoformat())
    assert [(a.rule, a.subject) for a in alerts] == [("spend_velocity", "+442000000101")]
    row = fraud.read_alerts([fraud.alerts_file(warehouse, D0.isoformat())])[0]
    assert row["metrics"]["international_spend"] == "12.0000"
    assert row["metrics"]["weighted_spend"] == "24.0000"
    assert row["baseline"]["active_hours"] == 10


def hour_of_traffic(day_: date, hour: int, calls: int, carrier: str, answered: bool = True):
    return [
        Call(
            f"t-{carrier}-{day_}-{hour}-{i}",
            f"+44700{i:07d}",
            f"+44800{i:07d}",
            datetime(day_.year, day_.month, day_.day, hour, 0, tzinfo=UTC)
            + timedelta(seconds=i * 3600 // max(calls, 1)),
            seconds=120,
            answered=answered,
            carrier=carrier,
        )
        for i in range(calls)
    ]


@pytest.mark.parametrize(("trailing_days", "expected"), [(4, []), (5, ["carrier_009"])])
def test_a_traffic_baseline_needs_its_minimum_days(
    warehouse: Warehouse, trailing_days: int, expected: list[str]
) -> None:
    calls = []
    for n in range(-trailing_days, 1):
        for hour in range(24):
            busy = hour != 10 or n < 0  # today, carrier_009 carries nothing at 10:00
            calls += hour_of_traffic(day(n), hour, 100 if busy else 0, "carrier_009")
    write_calls(warehouse, calls)
    alerts = raised(warehouse, D0.isoformat())
    # The destination it serves (GB) is judged without the carrier's own traffic that
    # hour, so the outage is one alert, not one per destination.
    assert [a.subject for a in alerts] == expected
    for a in alerts:
        assert a.severity == "ERROR"  # an outage: the hour kept none of its calls
        assert a.window_start == at("2026-11-16T10:00:00")


def test_a_small_subject_is_not_judged_and_a_partial_hour_is_no_outage(
    warehouse: Warehouse,
) -> None:
    calls = []
    for n in range(-7, 1):
        for hour in range(24):
            if n == 0 and hour > 14:
                continue  # today's data stops at 14:xx: that hour is still arriving
            big = 100 if not (n == 0 and hour == 14) else 10
            calls += hour_of_traffic(day(n), hour, big, "carrier_big")
            small = 10 if not (n == 0 and hour == 3) else 0  # usual 10 < min_hour_calls
            calls += hour_of_traffic(day(n), hour, small, "carrier_small")
    write_calls(warehouse, calls)
    assert raised(warehouse, D0.isoformat()) == []


def test_per_call_oddities(warehouse: Warehouse) -> None:
    start = at("2026-11-16T08:00:00")
    calls = [
        Call("long-1", "+441111", "+442222", start, seconds=4 * 3600),  # exactly 4 h: fine
        Call("long-2", "+443333", "+442222", start, seconds=4 * 3600 + 1),
        Call("long-3", "+444444", "+442222", start, seconds=13 * 3600),
        Call("self-1", "+445555", "+445555", start, flags=("self_call",)),
        Call("loss-1", "+446666", "+442222", start, carrier="carrier_007", margin="-0.5000"),
        Call("loss-2", "+446666", "+442222", start, carrier="carrier_007", margin="-0.2500"),
    ]
    write_calls(warehouse, calls)
    result = fraud.refresh_day(warehouse, D0.isoformat(), DEFAULTS)
    assert result.path is not None
    rows = fraud.read_alerts([result.path])
    got = {(r["rule"], r["subject"]): r for r in rows}
    assert set(got) == {
        ("long_call", "+443333"),
        ("long_call", "+444444"),
        ("self_call", "+445555"),
        ("negative_margin", "carrier_007"),
    }
    assert got[("long_call", "+443333")]["severity"] == "WARN"
    assert got[("long_call", "+444444")]["severity"] == "ERROR"  # over 12 h
    loss = got[("negative_margin", "carrier_007")]
    assert loss["metrics"]["loss"] == "0.7500" and loss["metrics"]["calls"] == 2
    assert loss["sample_call_ids"] == ["loss-1", "loss-2"]


@pytest.mark.parametrize("files", [1, 2])
@pytest.mark.parametrize(("sample", "expected"), [(3, ["loss-a", "loss-b", "loss-c"]), (0, [])])
def test_sample_calls_are_the_first_by_start_time_then_call_id(
    warehouse: Warehouse, sample: int, expected: list[str], files: int
) -> None:
    start = at("2026-11-16T08:00:00")
    calls = [
        Call(f"loss-{name}", "+446666", "+442222", start + timedelta(minutes=minute),
             carrier="carrier_007", margin=margin, call_type=kind)
        for name, minute, margin, kind in [
            ("e", 9, "-0.1000", "national"), ("c", 1, "-0.0500", "international"),
            ("b", 1, "-0.1000", "national"), ("d", 5, "-0.2000", "national"),
            ("a", 0, "-0.1000", "national"),
        ]
    ]  # fmt: skip
    # In one file, or in two (a late file): the carrier's day is merged from each file's part.
    write_calls(warehouse, calls[: 5 if files == 1 else 2])
    write_calls(warehouse, calls[5 if files == 1 else 2 :], batch="b2")
    config = parse_config({"alerts": {"sample_call_ids": sample}})
    result = fraud.refresh_day(warehouse, D0.isoformat(), config)
    assert result.path is not None
    (loss,) = fraud.read_alerts([result.path])
    assert loss["metrics"]["calls"] == 5
    assert (loss["metrics"]["loss"], loss["metrics"]["worst_margin"]) == ("0.5500", "-0.2000")
    assert loss["sample_call_ids"] == expected
    # From the first call's start to the last call's end (09:00 + 60 s).
    assert (loss["window_start"], loss["window_end"]) == (
        "2026-11-16T08:00:00Z",
        "2026-11-16T08:10:00Z",
    )


def test_a_disabled_rule_raises_nothing(warehouse: Warehouse) -> None:
    write_calls(
        warehouse,
        [Call("self-1", "+445555", "+445555", at("2026-11-16T09:00:00"), flags=("self_call",))],
    )
    assert [a.rule for a in raised(warehouse, D0.isoformat())] == ["self_call"]
    off = parse_config({"self_call": {"enabled": False}})
    assert raised(warehouse, D0.isoformat(), off) == []


# -- snooze ----------------------------------------------------------------------------------


def alert(rule: str, subject: str, start: str, severity: str = "WARN", hours: int = 1) -> Alert:
    begin = at(start)
    return Alert(
        f"{rule}-{subject}-{start}",
        rule,
        severity,
        "caller",
        subject,
        begin,
        begin + timedelta(hours=hours),
    )


@pytest.mark.parametrize(
    ("earlier", "candidates", "kept"),
    [
        # the same rule and subject within 24 h of the last alert's end: snoozed
        ([], ["wangiri A 10 WARN", "wangiri A 20 WARN"], ["wangiri A 10 WARN"]),
        # ... unless the severity rises
        ([], ["wangiri A 10 WARN", "wangiri A 20 ERROR"],
         ["wangiri A 10 WARN", "wangiri A 20 ERROR"]),
        # ... and not when it falls back
        ([], ["wangiri A 10 ERROR", "wangiri A 20 WARN"], ["wangiri A 10 ERROR"]),
        # another subject or another rule is another alert
        ([], ["wangiri A 10 WARN", "wangiri B 11 WARN", "irsf A 12 WARN"],
         ["wangiri A 10 WARN", "wangiri B 11 WARN", "irsf A 12 WARN"]),
        # an earlier day's alert snoozes today's ...
        (["wangiri A -10 WARN"], ["wangiri A 10 WARN"], []),
        # ... until 24 h after its window ended
        (["wangiri A -16 WARN"], ["wangiri A 10 WARN"], ["wangiri A 10 WARN"]),
    ],
)  # fmt: skip
def test_snooze(earlier: list[str], candidates: list[str], kept: list[str]) -> None:
    def parse(spec: str) -> Alert:
        rule, subject, hour, severity = spec.split()
        start = datetime(2026, 11, 16, tzinfo=UTC) + timedelta(hours=int(hour))
        return alert(rule, subject, start.isoformat()[:19], severity)

    out, snoozed = fraud.snooze(
        [parse(s) for s in candidates], [parse(s) for s in earlier], DEFAULTS
    )
    assert out == [parse(s) for s in kept]
    assert len(out) + len(snoozed) == len(candidates)


def test_the_snooze_carries_over_days_and_is_the_same_on_a_rerun(warehouse: Warehouse) -> None:
    caller = "+23276000009"
    calls = [*background(D0), *background(day(1)), *background(day(2))]
    calls += burst(caller, at("2026-11-16T20:00:00"), 40)  # raised
    calls += burst(caller, at("2026-11-17T08:00:00"), 40)  # within 24 h: snoozed
    calls += burst(caller, at("2026-11-17T12:00:00"), 120, every_seconds=20)  # ERROR: raised
    calls += burst(caller, at("2026-11-18T18:00:00"), 40)  # after the ERROR's 24 h: raised
    write_calls(warehouse, calls)
    results = [fraud.refresh_day(warehouse, day(n).isoformat(), DEFAULTS) for n in range(3)]
    assert [[(a.window_start.hour, a.severity) for a in r.raised] for r in results] == [
        [(20, "WARN")],
        [(12, "ERROR")],
        [(18, "WARN")],
    ]
    assert [[a.window_start.hour for a in r.snoozed] for r in results] == [[], [8], []]
    again = fraud.refresh_day(warehouse, day(1).isoformat(), DEFAULTS)
    assert again.raised == results[1].raised and again.snoozed == results[1].snoozed
    unsnoozed = parse_config({"wangiri": {"snooze_hours": 0}})
    assert len(fraud.refresh_day(warehouse, day(1).isoformat(), unsnoozed).raised) == 2


def test_a_day_without_calls_has_no_alert_file(warehouse: Warehouse) -> None:
    path = fraud.alerts_file(warehouse, D0.isoformat())
    path.parent.mkdir(parents=True)
    path.write_bytes(b"stale")
    result = fraud.refresh_day(warehouse, D0.isoformat(), DEFAULTS)
    assert result.path is None and not path.exists()


@pytest.mark.parametrize("bad", ["2026-3-01", "../x", "2026-02-30"])
def test_partition_keys_are_checked(warehouse: Warehouse, bad: str) -> None:
    with pytest.raises(ValueError):
        fraud.refresh_day(warehouse, bad, DEFAULTS)


# -- configuration ---------------------------------------------------------------------------


def test_the_shipped_file_holds_the_defaults() -> None:
    shipped = load_config(PROJECT_ROOT / "fraud.toml")
    assert shipped.version() == DEFAULTS.version()
    assert shipped.outlet == DEFAULTS.outlet


def test_a_missing_file_means_the_defaults(tmp_path: Path) -> None:
    config = load_config(tmp_path / "absent.toml")
    assert config.version() == DEFAULTS.version()
    assert "absent" in config.source


def test_the_file_can_be_moved_by_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mine.toml").write_text("[wangiri]\nmin_short_calls = 50\n")
    monkeypatch.chdir(tmp_path)
    path = config_path({"CDR_FRAUD_CONFIG": "mine.toml"})
    assert path == (tmp_path / "mine.toml").resolve()
    assert load_config(path).wangiri.min_short_calls == 50
    assert config_path({}) == (PROJECT_ROOT / "fraud.toml").resolve()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[wangiri]\nmin_short_calls = -1", "[wangiri] min_short_calls: must be >= 1, got -1"),
        ("[wangiri]\nmin_short_calls = 2.5", "[wangiri] min_short_calls: must be a whole number"),
        ('[irsf]\nmin_spend = "ten"', "[irsf] min_spend: must be a decimal amount, got 'ten'"),
        ("[irsf]\nmin_spend = 0.1", "[irsf] min_spend: must be an amount as a string"),
        ('[irsf]\nhigh_risk_prefixes = ["+88x"]', "[irsf] high_risk_prefixes: '+88x' is not"),
        ('[traffic_anomaly]\nmetrics = ["calls", "erlangs"]', "[traffic_anomaly] metrics:"),
        ("[traffic_anomaly]\nz_warn = 8.0\nz_error = 7.0", "[traffic_anomaly] z_error: must be"),
        ("[spend_velocity]\nbusiness_days = [0]", "[spend_velocity] business_days:"),
        ("[wangiri]\nmin_short_call = 3", "[wangiri] min_short_call: unknown key"),
        ("[wangiry]\nenabled = true", "unknown section [wangiry]"),
        ('[outlet]\nkind = "http"', "[outlet] url: must be an http:// or https:// URL"),
        ('[outlet]\nkind = "email"', "[outlet] kind: must be one of"),
        ("[wangiri]\nenabled = 1", "[wangiri] enabled: must be true or false"),
        ("[wangiri\n", "not valid TOML"),
    ],
)
def test_a_bad_value_names_the_file_the_rule_and_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "fraud.toml"
    path.write_text(text + "\n")
    with pytest.raises(FraudConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value)


def test_every_key_of_every_section_is_checked() -> None:
    from dataclasses import asdict

    from cdr_assets.lib import fraud_config

    for section, values in asdict(DEFAULTS).items():
        if section == "source":
            continue
        for key in values:
            assert (section, key) in fraud_config._CHECKS or ("*", key) in fraud_config._CHECKS
