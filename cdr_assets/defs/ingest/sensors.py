"""The landing sensor: a listing of the landing folder and a cursor in, one batch run out.

The cursor remembers, for the files now in the folder, what the last tick saw (a file is
ready when two ticks see the same size and modification time) and which ones a run already
took (so a file is taken once, even while its run has not moved it yet). Files that left
the folder drop out of the cursor, so it stays as small as the folder.
"""

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import dagster as dg

from cdr_assets.defs.partitions import landing_batches
from cdr_assets.defs.resources import CdrPipeline
from cdr_assets.lib.landing import LandedEntry, list_landing, ready_files

INGEST_JOB_NAME = "ingest_batch"
MAX_FILES_PER_RUN = 1000


@dataclass
class LandingCursor:
    seen: dict[str, tuple[int, int]] = field(default_factory=dict)
    claimed: dict[str, tuple[int, int]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | None) -> "LandingCursor":
        if not text:
            return cls()
        data = json.loads(text)
        return cls(
            seen={k: (v[0], v[1]) for k, v in data.get("seen", {}).items()},
            claimed={k: (v[0], v[1]) for k, v in data.get("claimed", {}).items()},
        )

    def dump(self) -> str:
        return json.dumps({"seen": self.seen, "claimed": self.claimed}, sort_keys=True)


def new_batch_id(now: datetime | None = None) -> str:
    """Batch keys sort by the time they were taken."""
    return (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%fZ")


def batch_run_request(batch_id: str, files: list[str]) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=batch_id,
        partition_key=batch_id,
        run_config={"ops": {"raw_cdrs": {"config": {"files": files}}}},
        tags={"cdr/files": str(len(files))},
    )


def plan_tick(
    listing: list[LandedEntry], cursor: LandingCursor, max_files: int = MAX_FILES_PER_RUN
) -> tuple[list[str], "LandingCursor"]:
    """Which files this tick takes, and the cursor after it (pure: no I/O)."""
    ready = ready_files(listing, cursor.seen, cursor.claimed)[:max_files]
    present = {e.name: e.signature for e in listing}
    claimed = {name: sig for name, sig in cursor.claimed.items() if present.get(name) == sig}
    claimed.update({e.name: e.signature for e in ready})
    return [e.name for e in ready], LandingCursor(seen=present, claimed=claimed)


@dg.sensor(
    job_name=INGEST_JOB_NAME,
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Takes every complete file in the landing folder, once, in one run per tick.",
)
def landing_sensor(
    context: dg.SensorEvaluationContext, cdr: CdrPipeline
) -> dg.SensorResult | dg.SkipReason:
    cursor = LandingCursor.parse(context.cursor)
    listing = list_landing(cdr.settings.landing_dir)
    files, next_cursor = plan_tick(listing, cursor)
    if not files:
        waiting = len(listing) - len(next_cursor.claimed)
        return dg.SensorResult(
            skip_reason=f"no file ready ({waiting} waiting to settle)",
            cursor=next_cursor.dump(),
        )
    batch_id = new_batch_id()
    return dg.SensorResult(
        run_requests=[batch_run_request(batch_id, files)],
        dynamic_partitions_requests=[landing_batches.build_add_request([batch_id])],
        cursor=next_cursor.dump(),
    )
