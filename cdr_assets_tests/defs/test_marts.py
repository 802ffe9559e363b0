"""The marts kept current by runs, by automation and by the rollup schedules."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from cdr_assets.cli import main
from cdr_assets.defs.marts.assets import (
    billing_exports,
    billing_mismatches,
    day_marts,
    monthly_summary,
)
from cdr_assets.defs.marts.schedules import daily_rollup, monthly_close
from cdr_assets.defs.resources import CdrPipeline
from cdr_assets.lib import exports, marts
from cdr_assets.lib.warehouse import Warehouse

SHIPPED_RATES = Path(__file__).resolve().parents[2] / "rates"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CDR_LANDING_DIR", str(tmp_path / "landing"))
    monkeypatch.setenv("CDR_WAREHOUSE_DIR", str(tmp_path / "warehouse"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return tmp_path


def mart_hashes(warehouse: Warehouse) -> dict[str, str]:
    return {
        f"{p.parent.name}/{p.name}": hashlib.sha256(p.read_bytes()).hexdigest()
        for table in marts.MART_TABLES
        for p in (warehouse.root / table).glob("*.parquet")
    }


def daily_calls(warehouse: Warehouse) -> dict[str, int]:
    with duckdb.connect(str(warehouse.serving_path), read_only=True) as con:
        return {
            str(d): n
            for d, n in con.execute("SELECT call_date, total_calls FROM daily_summary").fetchall()
        }


def test_a_late_file_changes_its_days_and_months_marts_and_nothing_else(env: Path) -> None:
    assert main(["generate"]) == 0
    assert main(["process"]) == 0
    warehouse = Warehouse(env / "warehouse")
    before_hashes = mart_hashes(warehouse)
    before_calls = daily_calls(warehouse)
    late = (datetime.now(UTC).date() - timedelta(days=3)).isoformat()
    (env / "landing" / "late.csv").write_text(
        "call_id,caller_number,called_number,start_time,duration_seconds,carrier_id\n"
        + "".join(
            f"late-{i},+12025550123,+442079460958,{late}T0{i}:15:00Z,{60 * i},carrier_001\n"
            for i in range(1, 4)
        )
    )
    assert main(["process"]) == 0
    after_hashes = mart_hashes(warehouse)
    changed = {k for k in after_hashes if before_hashes.get(k) != after_hashes[k]}
    assert not set(before_hashes) - set(after_hashes)  # nothing disappeared
    day_files = {f"{table}/{late}.parquet" for table in marts.DAY_TABLES}
    assert changed == day_files | {f"monthly_summary/{late[:7]}.parquet"}
    after_calls = daily_calls(warehouse)
    assert after_calls[late] == before_calls.get(late, 0) + 3
    assert {d: n for d, n in after_calls.items() if d != late} == {
        d: n for d, n in before_calls.items() if d != late
    }
    for day in after_calls:
        assert marts.reconcile_day(warehouse, day) == []
    assert marts.reconcile_month(warehouse, late[:7]) == []


def test_materialising_a_days_marts_from_the_ui_rebuilds_them_and_their_month(
    env: Path,
) -> None:
    assert main(["generate"]) == 0
    assert main(["process"]) == 0
    warehouse = Warehouse(env / "warehouse")
    before = mart_hashes(warehouse)
    day = warehouse.cdrs_days()[0]
    resource = CdrPipeline(
        landing_dir=str(env / "landing"),
        rates_dir=str(SHIPPED_RATES),
        warehouse_dir=str(warehouse.root),
    )
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("call_dates", [day])
        result = dg.materialize(
            [day_marts], partition_key=day, resources={"cdr": resource}, instance=instance
        )
        assert result.success
        checks = {
            (e.asset_key.to_user_string(), e.check_name): e.passed
            for e in result.get_asset_check_evaluations()
        }
        assert checks == {
            ("daily_summary", "matches_cdrs"): True,
            **{(t, "matches_daily_summary"): True for t in marts.DAY_TABLES[1:]},
            ("monthly_summary", "matches_days"): True,
        }
        months = [
            m.partition
            for m in result.get_asset_materialization_events()
            if m.asset_key == dg.AssetKey("monthly_summary")
        ]
        assert months == [day[:7]]
        month = dg.materialize(
            [monthly_summary],
            partition_key=day[:7],
            resources={"cdr": resource},
            instance=instance,
        )
        assert month.success
    assert mart_hashes(warehouse) == before  # rebuilt from the same cdrs: the same bytes


def test_a_cdrs_day_changed_outside_a_batch_run_is_picked_up_by_automation(
    tmp_path: Path,
) -> None:
    resource = CdrPipeline(
        landing_dir=str(tmp_path), rates_dir=str(SHIPPED_RATES), warehouse_dir=str(tmp_path)
    )
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("call_dates", ["2026-11-20"])
        defs = dg.Definitions(
            assets=[dg.AssetSpec("cdrs", partitions_def=day_marts.partitions_def), day_marts],
            resources={"cdr": resource},
        )
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        instance.report_runless_asset_event(dg.AssetMaterialization("cdrs", partition="2026-11-20"))
        second = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=first.cursor
        )
        assert first.total_requested == 0
        for table in marts.DAY_TABLES:
            assert second.get_requested_partitions(dg.AssetKey(table)) == {"2026-11-20"}
        assert second.total_requested == len(marts.DAY_TABLES)


def test_the_daily_rollup_finalises_yesterday_and_skips_a_day_without_calls() -> None:
    with dg.instance_for_test() as instance:
        at = datetime(2026, 11, 25, 0, 15, tzinfo=UTC)
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=at)
        assert isinstance(daily_rollup(context), dg.SkipReason)
        instance.add_dynamic_partitions("call_dates", ["2026-11-24"])
        request = daily_rollup(context)
        assert isinstance(request, dg.RunRequest)
        assert request.partition_key == "2026-11-24"
        assert request.run_key == "daily_rollup:2026-11-24"  # one run per day, however often


@pytest.mark.parametrize(
    ("today", "month"), [(date(2026, 12, 1), "2026-11"), (date(2027, 1, 1), "2026-12")]
)
def test_the_monthly_close_takes_the_previous_month(today: date, month: str) -> None:
    with dg.instance_for_test() as instance:
        at = datetime.combine(today, datetime.min.time(), UTC) + timedelta(minutes=30)
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=at)
        assert isinstance(monthly_close(context), dg.SkipReason)
        instance.add_dynamic_partitions("call_months", [month])
        request = monthly_close(context)
        assert isinstance(request, dg.RunRequest)
        assert request.partition_key == month


def test_the_monthly_close_writes_billing_exports_that_equal_the_marts(env: Path) -> None:
    assert main(["generate"]) == 0
    assert main(["process"]) == 0
    warehouse = Warehouse(env / "warehouse")
    month = warehouse.cdrs_days()[0][:7]
    resource = CdrPipeline(
        landing_dir=str(env / "landing"),
        rates_dir=str(SHIPPED_RATES),
        warehouse_dir=str(warehouse.root),
    )
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("call_months", [month])
        result = dg.materialize(
            [monthly_summary, billing_exports],
            partition_key=month,
            resources={"cdr": resource},
            instance=instance,
        )
        assert result.success
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert checks == {"matches_days": True, "totals_match_marts": True}
    written = exports.read_billing_totals(warehouse, month)
    assert set(written) == set(marts.carrier_month_totals(warehouse, month))
    assert sorted(p.suffix for p in exports.billing_dir(warehouse, month).iterdir()) == sorted(
        [".csv", ".json"] * len(written)
    )


def test_billing_mismatches_name_the_carrier_and_measure() -> None:
    totals = exports.BillingTotals(
        calls=2,
        billable_seconds=120,
        retail_billable_seconds=120,
        cost=Decimal("0.0800"),
        revenue=Decimal("0.1200"),
        margin=Decimal("0.0400"),
    )
    marts_side = {
        "calls": 2,
        "billable_seconds": 120,
        "cost": Decimal("0.0800"),
        "revenue": Decimal("0.1200"),
        "margin": Decimal("0.0400"),
    }
    assert billing_mismatches({"A": totals}, {"A": marts_side}) == []
    tampered = {**marts_side, "cost": Decimal("0.0801")}
    assert billing_mismatches({"A": totals}, {"A": tampered}) == [
        "A.cost: export 0.0800, marts 0.0801"
    ]
    assert billing_mismatches({}, {"A": marts_side}) == ["A: no export"]
