"""Jobs of the ingestion layers (partitioning comes from the selected assets)."""

from __future__ import annotations

import dagster as dg

from cdr_assets.defs.ingest.sensors import INGEST_JOB_NAME
from cdr_assets.lib.marts import DAY_TABLES

# The batch layers from pricing on: what a re-rating run replays.
PRICED_LAYERS = (
    "rate_decks",
    "rated_cdrs",
    "enriched_cdrs",
    "duplicate_cdrs",
    "landed_files",
    "serving_db",
)
# Every job runs in one process: steps share it, so a batch costs one run start, not one a step.
WRITER_TAGS = {"cdr/writer": "ingest"}

ingest_batch = dg.define_asset_job(
    INGEST_JOB_NAME,
    selection=dg.AssetSelection.assets(
        "raw_cdrs", "validated_cdrs", "rejected_cdrs", *PRICED_LAYERS
    ),
    description="Take one landing batch through every layer and publish cdr.duckdb.",
    executor_def=dg.in_process_executor,
    tags=WRITER_TAGS,
)

rebuild_cdrs_days = dg.define_asset_job(
    "rebuild_cdrs_days",
    selection=dg.AssetSelection.assets("cdrs", *DAY_TABLES, "serving_db"),
    description="Rewrite one call date of cdrs and its marts from the batches' rated rows "
    "and enriched facts, then publish.",
    executor_def=dg.in_process_executor,
    tags=WRITER_TAGS,
)

rerate_batches = dg.define_asset_job(
    "rerate_batches",
    selection=dg.AssetSelection.assets(*PRICED_LAYERS),
    description="Price a batch again with the current decks; its amounts in cdrs are replaced.",
    executor_def=dg.in_process_executor,
    tags=WRITER_TAGS,
)
