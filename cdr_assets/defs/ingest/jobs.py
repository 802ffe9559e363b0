"""Jobs of the ingestion layers (partitioning comes from the selected assets)."""

from __future__ import annotations

import dagster as dg

from cdr_assets.defs.ingest.sensors import INGEST_JOB_NAME

# One process per run: steps share it, so a small batch costs one run start, not one a step.
ingest_batch = dg.define_asset_job(
    INGEST_JOB_NAME,
    selection=dg.AssetSelection.assets(
        "raw_cdrs",
        "validated_cdrs",
        "rejected_cdrs",
        "rate_decks",
        "rated_cdrs",
        "enriched_cdrs",
        "duplicate_cdrs",
        "landed_files",
        "serving_db",
    ),
    executor_def=dg.in_process_executor,
    tags={"cdr/writer": "ingest"},
    description="Take one landing batch through every layer and publish cdr.duckdb.",
)

rebuild_cdrs_days = dg.define_asset_job(
    "rebuild_cdrs_days",
    selection=dg.AssetSelection.assets("cdrs", "serving_db"),
    executor_def=dg.in_process_executor,
    tags={"cdr/writer": "ingest"},
    description="Rewrite one call date of cdrs from the validated batches, then publish.",
)

rerate_batches = dg.define_asset_job(
    "rerate_batches",
    selection=dg.AssetSelection.assets(
        "rate_decks",
        "rated_cdrs",
        "enriched_cdrs",
        "duplicate_cdrs",
        "landed_files",
        "serving_db",
    ),
    executor_def=dg.in_process_executor,
    tags={"cdr/writer": "ingest"},
    description="Price a batch again with the current decks; its amounts in cdrs are replaced.",
)
