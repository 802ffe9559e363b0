"""Marts: day tables per call date, ``monthly_summary`` per month, each reconciled.

Freshness: the batch run that changes days of ``cdrs`` rebuilds those days' marts and their
months in the same step (``publish_marts``), so the marts never lag ``cdrs`` when a run
ends, headless or not. Anything else that rewrites a day of ``cdrs`` (materialising the
``cdrs`` partition from the UI, a re-rating) is caught by the ``eager`` automation
condition of the day marts, evaluated by the ``marts_automation`` sensor.
"""

from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, date, datetime

import dagster as dg

from cdr_assets.defs.partitions import call_dates, call_months
from cdr_assets.defs.reporting import parquet_metadata, report
from cdr_assets.defs.resources import CdrPipeline
from cdr_assets.lib import exports, marts
from cdr_assets.lib.retention import CDRS, RetentionPolicy
from cdr_assets.lib.warehouse import Warehouse

OWNERS = ["team:cdr-data"]
POOL = "cdr_warehouse"
GROUP = "marts"

DESCRIPTIONS = {
    "daily_summary": "Per call date: calls, answered, seconds, money, call types, ASR, ACD, "
    "busy hour.",
    "hourly_traffic": "Per UTC hour: calls, answered, seconds, money, Erlangs, ASR, ACD.",
    "carrier_daily": "Per call date and carrier: ASR, ACD, seconds, money, cost per minute.",
    "destination_daily": "Per call date and called country: calls, money, margin, share of "
    "the day's calls.",
    "route_daily": "Per call date, carrier, called country and call type: the grain of "
    "monthly_summary.",
    "monthly_summary": "Per month, carrier, called country and call type: calls, seconds, money.",
}


def _check_name(table: str) -> str:
    return "matches_daily_summary" if table != "daily_summary" else "matches_cdrs"


def _day_checks(warehouse: Warehouse, day: str) -> list[dg.AssetCheckEvaluation]:
    mismatches = marts.reconcile_day(warehouse, day)
    out = []
    for table in marts.DAY_TABLES:
        found = [str(m) for m in mismatches if m.table == table]
        out.append(
            dg.AssetCheckEvaluation(
                asset_key=dg.AssetKey(table),
                check_name=_check_name(table),
                passed=not found,
                metadata={"day": day, "mismatches": dg.MetadataValue.json(found)},
                partition=day,
            )
        )
    return out


def _month_check(warehouse: Warehouse, month: str) -> dg.AssetCheckEvaluation:
    found = [str(m) for m in marts.reconcile_month(warehouse, month)]
    return dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey("monthly_summary"),
        check_name="matches_days",
        passed=not found,
        metadata={"month": month, "mismatches": dg.MetadataValue.json(found)},
        partition=month,
    )


def _raise_if_failed(checks: list[dg.AssetCheckEvaluation]) -> None:
    failed = [c for c in checks if not c.passed]
    if failed:
        raise dg.Failure(
            "marts do not reconcile: "
            + "; ".join(
                f"{c.asset_key.to_user_string()}.{c.check_name} ({c.partition})" for c in failed
            ),
            metadata={"failed_checks": len(failed)},
        )


def _log_month(
    context: dg.AssetExecutionContext, warehouse: Warehouse, refreshed: marts.Refreshed
) -> list[dg.AssetCheckEvaluation]:
    months = sorted(refreshed.months)
    context.instance.add_dynamic_partitions(call_months.name or "call_months", months)
    checks = []
    for month in months:
        context.log_event(
            dg.AssetMaterialization(
                asset_key="monthly_summary",
                partition=month,
                metadata={"dagster/row_count": refreshed.months[month]},
            )
        )
        checks.append(_month_check(warehouse, month))
        context.log_event(checks[-1])
    return checks


def keep_before() -> date | None:
    """Days before the cdrs retention cut keep their marts (their cdrs may be gone)."""
    return RetentionPolicy.from_env().cut(CDRS, datetime.now(UTC).date())


def publish_marts(
    context: dg.AssetExecutionContext, warehouse: Warehouse, days: Iterable[str]
) -> marts.Refreshed:
    """Rebuild the marts of ``days`` and their months, record them and their checks.

    Call under the writer lock, from a batch run (the days it changed). The checks are
    logged as results of the marts' own checks; a failed one fails the step, so nothing
    unreconciled is published.
    """
    refreshed = marts.refresh(warehouse, sorted(days), keep_before())
    checks = []
    for day, rows in refreshed.days.items():
        for table, n in rows.items():
            context.log_event(
                dg.AssetMaterialization(
                    asset_key=table, partition=day, metadata={"dagster/row_count": n}
                )
            )
        for check in _day_checks(warehouse, day):
            context.log_event(check)
            checks.append(check)
    checks += _log_month(context, warehouse, refreshed)
    report(
        context, f"marts refreshed for {len(refreshed.days)} days, {len(refreshed.months)} months"
    )
    _raise_if_failed(checks)
    return refreshed


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            table,
            deps=["cdrs"],
            description=DESCRIPTIONS[table],
            kinds={"parquet", "duckdb"},
            owners=OWNERS,
            automation_condition=dg.AutomationCondition.eager(),
        )
        for table in marts.DAY_TABLES
    ],
    check_specs=[
        dg.AssetCheckSpec(
            _check_name(table),
            asset=table,
            blocking=True,
            description="daily_summary totals equal the sums over the day's cdrs"
            if table == "daily_summary"
            else f"{table} sums equal daily_summary (and the day's cdrs)",
        )
        for table in marts.DAY_TABLES
    ],
    partitions_def=call_dates,
    group_name=GROUP,
    pool=POOL,
    can_subset=False,
)
def day_marts(
    context: dg.AssetExecutionContext, cdr: CdrPipeline
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Every day mart of one call date, rebuilt from that day's cdrs (and its month's table)."""
    day = marts.check_day(context.partition_key)
    with cdr.writing() as warehouse:
        refreshed = marts.refresh(warehouse, [day], keep_before())
        if refreshed.kept:
            report(context, f"{day} is past the cdrs retention window: its marts are kept")
        else:
            report(context, f"{day}: rows {refreshed.days[day]}")
        for table in marts.DAY_TABLES:
            path = marts.mart_file(warehouse, table, day)
            yield dg.MaterializeResult(
                asset_key=table, metadata=parquet_metadata([path] if path.exists() else [])
            )
        for check in _day_checks(warehouse, day):
            yield dg.AssetCheckResult(
                asset_key=check.asset_key,
                check_name=check.check_name,
                passed=check.passed,
                metadata=dict(check.metadata),
            )
        # The month the day belongs to is rebuilt with it (its own partition set).
        _raise_if_failed(_log_month(context, warehouse, refreshed))


@dg.asset(
    partitions_def=call_months,
    deps=[dg.AssetDep("route_daily", partition_mapping=dg.AllPartitionMapping())],
    description=DESCRIPTIONS["monthly_summary"],
    group_name=GROUP,
    kinds={"parquet", "duckdb"},
    owners=OWNERS,
    pool=POOL,
    check_specs=[
        dg.AssetCheckSpec(
            "matches_days",
            asset="monthly_summary",
            blocking=True,
            description="The month's sums equal the sums of its days' daily_summary.",
        )
    ],
)
def monthly_summary(
    context: dg.AssetExecutionContext, cdr: CdrPipeline
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """One month of route_daily summed: month x carrier x called country x call type."""
    month = marts.check_month(context.partition_key)
    with cdr.writing() as warehouse:
        rows = marts.refresh_month(warehouse, month)
        path = marts.mart_file(warehouse, "monthly_summary", month)
        report(context, f"{month}: {rows} rows")
        yield dg.MaterializeResult(metadata=parquet_metadata([path] if path.exists() else []))
        check = _month_check(warehouse, month)
    yield dg.AssetCheckResult(
        check_name=check.check_name, passed=check.passed, metadata=dict(check.metadata)
    )


@dg.asset(
    partitions_def=call_months,
    deps=["monthly_summary"],
    description="Per carrier and month: exports/billing/<month>/<carrier>.csv and .json, the "
    "call lines with their amounts and a totals row.",
    group_name=GROUP,
    kinds={"csv", "json"},
    owners=OWNERS,
    pool=POOL,
    check_specs=[
        dg.AssetCheckSpec(
            "totals_match_marts",
            asset="billing_exports",
            blocking=True,
            description="Each carrier's export totals equal its sums in monthly_summary.",
        )
    ],
)
def billing_exports(
    context: dg.AssetExecutionContext, cdr: CdrPipeline
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """The month's billing files, one CSV and one JSON per carrier."""
    month = marts.check_month(context.partition_key)
    with cdr.writing() as warehouse:
        exports.write_billing_month(warehouse, month, cdr.caller_numbers)
        written = exports.read_billing_totals(warehouse, month)
        expected = marts.carrier_month_totals(warehouse, month)
    report(context, f"{month}: billing files for {len(written)} carriers")
    yield dg.MaterializeResult(
        metadata={
            "folder": dg.MetadataValue.path(str(exports.billing_dir(warehouse, month))),
            "carriers": len(written),
            "totals": dg.MetadataValue.json(
                {c: {k: str(v) for k, v in vars(t).items()} for c, t in written.items()}
            ),
        }
    )
    yield dg.AssetCheckResult(
        check_name="totals_match_marts",
        passed=not (problems := billing_mismatches(written, expected)),
        metadata={"mismatches": dg.MetadataValue.json(problems)},
    )


def billing_mismatches(
    written: Mapping[str, exports.BillingTotals], expected: Mapping[str, Mapping[str, object]]
) -> list[str]:
    """Where the export totals differ from the marts, one line each (empty: they agree)."""
    problems = [f"{c}: no export" for c in expected if c not in written]
    problems += [f"{c}: not in monthly_summary" for c in written if c not in expected]
    for carrier in sorted(set(written) & set(expected)):
        for measure, value in expected[carrier].items():
            found = getattr(written[carrier], measure)
            if found != value:
                problems.append(f"{carrier}.{measure}: export {found}, marts {value}")
    return problems


marts_automation = dg.AutomationConditionSensorDefinition(
    "marts_automation",
    target=dg.AssetSelection.assets(*marts.DAY_TABLES),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=15,
    run_tags={"cdr/writer": "marts"},
    description="Rebuilds a day's marts when its cdrs changed outside a batch run.",
)
