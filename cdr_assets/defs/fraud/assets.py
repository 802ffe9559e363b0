"""Fraud and anomaly alerts: one partition per call date, surfaced as asset-check results.

The asset runs every rule of ``cdr_assets.lib.fraud`` over its day's ``cdrs`` (and the
trailing days the baselines need), applies the snooze and writes
``fraud_alerts/<day>.parquet``. Its two checks report the alerts the day raised, by
severity: ``no_error_alerts`` (ERROR) and ``no_warn_alerts`` (WARN), neither blocking, with
the top alerts in their metadata, so the day's partition shows red or yellow in the UI.
The ``eager`` automation condition refreshes a day whenever its ``cdrs`` change (evaluated
by ``fraud_automation``).
"""

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import dagster as dg

from cdr_assets.defs.fraud.resources import FraudRules
from cdr_assets.defs.partitions import call_dates
from cdr_assets.defs.reporting import parquet_metadata, report
from cdr_assets.defs.resources import CdrPipeline
from cdr_assets.lib import fraud as fraud_lib
from cdr_assets.lib.fraud_config import FraudConfig
from cdr_assets.lib.warehouse import Warehouse

OWNERS = ["team:cdr-data"]
POOL = "cdr_warehouse"
GROUP = "fraud"
TOP_ALERTS = 10

# check name -> the severity of the alerts it reports (and its own severity when it fails)
CHECKS = {"no_error_alerts": "ERROR", "no_warn_alerts": "WARN"}


def _markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    lines = ["| severity | rule | subject | window (UTC) | what |", "|---|---|---|---|---|"]
    for r in rows:
        what = str(r["summary"]).replace("|", "/")
        window = f"{r['window_start'][:16]} - {r['window_end'][11:16]}"
        lines.append(
            f"| {r['severity']} | {r['rule']} | {r['subject_type']} {r['subject']} | "
            f"{window} | {what} |"
        )
    return "\n".join(lines)


def check_evaluations(day: str, rows: Sequence[Mapping[str, Any]]) -> list[dg.AssetCheckResult]:
    """One result per check: passed when the day raised no alert of its severity."""
    results = []
    for name, severity in CHECKS.items():
        mine = [r for r in rows if r["severity"] == severity]
        top = fraud_lib.top_alerts(mine, TOP_ALERTS)
        by_rule: dict[str, int] = {}
        for r in mine:
            by_rule[r["rule"]] = by_rule.get(r["rule"], 0) + 1
        results.append(
            dg.AssetCheckResult(
                asset_key=dg.AssetKey(fraud_lib.TABLE),
                check_name=name,
                passed=not mine,
                severity=dg.AssetCheckSeverity.ERROR
                if severity == "ERROR"
                else dg.AssetCheckSeverity.WARN,
                metadata={
                    "day": day,
                    "alerts": len(mine),
                    "by_rule": dg.MetadataValue.json(by_rule),
                    "top_alerts": dg.MetadataValue.md(_markdown(top) if top else "none"),
                    "top_alert_ids": dg.MetadataValue.json([r["alert_id"] for r in top]),
                },
            )
        )
    return results


def _materialize_metadata(result: fraud_lib.DayAlerts, config: FraudConfig) -> dict[str, Any]:
    paths = [result.path] if result.path is not None and result.path.exists() else []
    snoozed: dict[str, int] = {}
    for a in result.snoozed:
        snoozed[a.rule] = snoozed.get(a.rule, 0) + 1
    return {
        **parquet_metadata(paths),
        "errors": result.count("ERROR"),
        "warnings": result.count("WARN"),
        "by_rule": dg.MetadataValue.json(result.by_rule()),
        "snoozed": dg.MetadataValue.json(snoozed),
        "config_version": result.config_version,
        "config": config.source,
        # Callers judged again: "all", or those of the files added since the last refresh.
        "callers_judged": "all" if result.callers_judged is None else result.callers_judged,
    }


def refresh_alerts(
    warehouse: Warehouse, day: str, config: FraudConfig
) -> tuple[fraud_lib.DayAlerts, list[dict[str, Any]]]:
    result = fraud_lib.refresh_day(warehouse, day, config)
    rows = fraud_lib.read_alerts([result.path]) if result.path is not None else []
    return result, rows


def _summary(result: fraud_lib.DayAlerts) -> str:
    if result.path is None:
        return f"{result.day}: no calls, no alerts"
    return (
        f"{result.day}: {result.count('ERROR')} error and {result.count('WARN')} warning "
        f"alerts {result.by_rule()}, {len(result.snoozed)} snoozed"
    )


@dg.asset(
    partitions_def=call_dates,
    deps=["cdrs"],
    description="Fraud and anomaly alerts of one call date: rule, severity, subject, window, "
    "metrics against their baseline, sample call_ids.",
    group_name=GROUP,
    kinds={"parquet", "duckdb"},
    owners=OWNERS,
    pool=POOL,
    automation_condition=dg.AutomationCondition.eager(),
    check_specs=[
        dg.AssetCheckSpec(
            "no_error_alerts",
            asset=fraud_lib.TABLE,
            blocking=False,
            description="The day raised no ERROR alert (the top ones are in the metadata).",
        ),
        dg.AssetCheckSpec(
            "no_warn_alerts",
            asset=fraud_lib.TABLE,
            blocking=False,
            description="The day raised no WARN alert (the top ones are in the metadata).",
        ),
    ],
)
def fraud_alerts(
    context: dg.AssetExecutionContext, cdr: CdrPipeline, fraud_rules: FraudRules
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Every fraud and anomaly rule over one call date's cdrs; alerts snoozed by rule+subject."""
    day = fraud_lib.check_day(context.partition_key).isoformat()
    config = fraud_rules.load()
    with cdr.writing() as warehouse:
        result, rows = refresh_alerts(warehouse, day, config)
        report(context, _summary(result))
        yield dg.MaterializeResult(metadata=_materialize_metadata(result, config))
    yield from check_evaluations(day, rows)


def publish_fraud_alerts(
    context: dg.AssetExecutionContext,
    warehouse: Warehouse,
    days: Iterable[str],
    config: FraudConfig,
) -> list[fraud_lib.DayAlerts]:
    """Refresh the alerts of ``days`` (in date order) from another step, such as the batch
    run, and record their materialisations and check results; call under the writer lock."""
    results = []
    for day in sorted(set(days)):
        result, rows = refresh_alerts(warehouse, day, config)
        context.log_event(
            dg.AssetMaterialization(
                asset_key=fraud_lib.TABLE,
                partition=day,
                metadata={
                    "dagster/row_count": len(rows),
                    "errors": result.count("ERROR"),
                    "warnings": result.count("WARN"),
                    "config_version": result.config_version,
                },
            )
        )
        for check in check_evaluations(day, rows):
            context.log_event(
                dg.AssetCheckEvaluation(
                    asset_key=dg.AssetKey(fraud_lib.TABLE),
                    check_name=check.check_name or "",
                    passed=check.passed,
                    severity=check.severity,
                    metadata=dict(check.metadata or {}),
                    partition=day,
                )
            )
        report(context, _summary(result))
        results.append(result)
    return results
