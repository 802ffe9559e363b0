"""The fraud alert outlet: new alerts, each handed over once, to a file or an HTTP endpoint.

``fraud_alert_outlet`` looks at the alert files of the newest ``since_days`` call dates
(``[outlet]`` in ``fraud.toml``). A file it has not seen in this state (by modification
time and size) is read, and its alerts whose ``alert_id`` the cursor has not recorded are
handed to the outlet in batches: appended to an NDJSON file, or POSTed as
``{"alerts": [...]}`` to a URL. A batch's ids enter the cursor only once the outlet took
it, so a failed POST is retried on the next tick and a delivered alert is not sent again
(re-running a day gives the same ids, so its alerts stay delivered). The cursor forgets
days that left the window, so it stays small.

Delivery is at least once: a tick that dies between a delivered batch and saving the cursor
sends that batch again; receivers can drop repeats by ``alert_id`` (the POST also carries
an ``Idempotency-Key`` per batch).

``fraud_automation`` evaluates the asset's ``eager`` condition, so a day whose ``cdrs``
changed gets its alerts refreshed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg

from cdr_assets.defs.fraud.resources import FraudRules
from cdr_assets.defs.resources import CdrPipeline
from cdr_assets.lib import fraud as fraud_lib
from cdr_assets.lib.fraud_config import FraudConfig, outlet_path
from cdr_assets.lib.warehouse import Warehouse

Deliver = Callable[[Sequence[Mapping[str, Any]]], None]
ReadAlerts = Callable[[Path], list[dict[str, Any]]]


@dataclass(frozen=True)
class DayState:
    signature: tuple[int, int] | None  # (mtime_ns, size) of the file once fully delivered
    sent: tuple[str, ...] = ()


@dataclass
class OutletCursor:
    days: dict[str, DayState] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | None) -> OutletCursor:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(
            {
                day: DayState(
                    tuple(state["signature"]) if state.get("signature") else None,
                    tuple(state.get("sent", [])),
                )
                for day, state in data.get("days", {}).items()
            }
        )

    def dump(self) -> str:
        return json.dumps(
            {
                "days": {
                    day: {"signature": list(s.signature) if s.signature else None, "sent": s.sent}
                    for day, s in sorted(self.days.items())
                }
            },
            sort_keys=True,
        )


@dataclass(frozen=True)
class AlertFile:
    day: str
    path: Path
    signature: tuple[int, int]


def list_alert_files(warehouse: Warehouse, since_days: int) -> list[AlertFile]:
    """The alert files of the newest ``since_days`` call dates, in date order."""
    days = fraud_lib.alert_days(warehouse)
    if not days:
        return []
    first = (date.fromisoformat(days[-1]) - timedelta(days=since_days - 1)).isoformat()
    out = []
    for day in days:
        if day < first:
            continue
        path = fraud_lib.alerts_file(warehouse, day)
        try:
            stat = path.stat()
        except FileNotFoundError:  # replaced or removed since the listing
            continue
        out.append(AlertFile(day, path, (stat.st_mtime_ns, stat.st_size)))
    return out


@dataclass(frozen=True)
class OutletTick:
    cursor: OutletCursor
    delivered: int
    error: str | None

    @property
    def message(self) -> str:
        if self.error:
            return (
                f"handed {self.delivered} alerts over, then the outlet failed (retried next "
                f"tick): {self.error}"
            )
        return f"handed {self.delivered} new alerts over" if self.delivered else "no new alerts"


def run_outlet(
    files: Sequence[AlertFile],
    cursor: OutletCursor,
    read: ReadAlerts,
    deliver: Deliver,
    batch_size: int,
) -> OutletTick:
    """Hand the alerts of ``files`` that ``cursor`` has not recorded to ``deliver``.

    Stops at the first failed batch: that day keeps its old signature (so it is read again
    next tick) with the ids delivered so far, and later days are left as they were.
    """
    days: dict[str, DayState] = {}
    delivered = 0
    error: str | None = None
    for file in files:
        state = cursor.days.get(file.day, DayState(None))
        if error is not None or state.signature == file.signature:
            days[file.day] = state
            continue
        sent = list(state.sent)
        known = set(sent)
        pending = [a for a in read(file.path) if a["alert_id"] not in known]
        complete = True
        for lo in range(0, len(pending), batch_size):
            batch = pending[lo : lo + batch_size]
            try:
                deliver(batch)
            except fraud_lib.OutletError as exc:
                error, complete = str(exc), False
                break
            sent += [str(a["alert_id"]) for a in batch]
            delivered += len(batch)
        days[file.day] = DayState(file.signature if complete else state.signature, tuple(sent))
    return OutletTick(OutletCursor(days), delivered, error)


def outlet_for(config: FraudConfig, warehouse: Warehouse) -> tuple[str, Deliver] | None:
    """(description, deliver) of the configured outlet; None for ``kind = "none"``."""
    outlet = config.outlet
    if outlet.kind == "ndjson":
        path = outlet_path(config, warehouse.root)
        return f"ndjson {path}", lambda alerts: fraud_lib.deliver_ndjson(path, alerts)
    if outlet.kind == "http":
        return (
            f"POST {outlet.url}",
            lambda alerts: fraud_lib.deliver_http(outlet.url, alerts, outlet.timeout_seconds),
        )
    return None


@dg.sensor(
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Hands each new fraud alert, once, to the outlet of fraud.toml [outlet] "
    "(NDJSON file or HTTP POST).",
)
def fraud_alert_outlet(
    context: dg.SensorEvaluationContext, cdr: CdrPipeline, fraud_rules: FraudRules
) -> dg.SensorResult:
    config = fraud_rules.load()
    warehouse = cdr.warehouse
    outlet = outlet_for(config, warehouse)
    if outlet is None:
        return dg.SensorResult(
            skip_reason="no outlet configured ([outlet] kind = 'none')", cursor=context.cursor
        )
    where, deliver = outlet
    tick = run_outlet(
        list_alert_files(warehouse, config.outlet.since_days),
        OutletCursor.parse(context.cursor),
        lambda path: fraud_lib.read_alerts([path], config.outlet.min_severity),
        deliver,
        config.outlet.batch_size,
    )
    if tick.error:
        context.log.warning(f"fraud alert outlet {where}: {tick.error}")
    return dg.SensorResult(skip_reason=f"{where}: {tick.message}", cursor=tick.cursor.dump())


fraud_automation = dg.AutomationConditionSensorDefinition(
    "fraud_automation",
    target=dg.AssetSelection.assets(fraud_lib.TABLE),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    run_tags={"cdr/writer": "fraud"},
    description="Refreshes a day's fraud alerts when its cdrs changed.",
)
