"""Enrichment: the facts of each number a batch's calls use (geography, number type, carrier,
time zones), joined to the calls when deduplication writes ``cdrs``."""

import dagster as dg

from cdr_assets.defs.partitions import landing_batches
from cdr_assets.defs.reporting import parquet_metadata, report
from cdr_assets.defs.resources import CdrPipeline
from cdr_assets.lib import ingest


@dg.asset(
    partitions_def=landing_batches,
    deps=["rated_cdrs"],
    group_name="enrichment",
    kinds={"parquet", "duckdb"},
    owners=["team:cdr-data"],
    pool="cdr_warehouse",
)
def enriched_cdrs(context: dg.AssetExecutionContext, cdr: CdrPipeline) -> dg.MaterializeResult:
    """The facts of every number the batch's calls use, one row per number: number type,
    region, carrier, time zones. ``cdrs`` joins them to each call (country names, number
    types, regions, carriers, the caller's time zone and local start time)."""
    batch_id = context.partition_key
    result = ingest.enrich_batch(cdr.settings, cdr.warehouse, batch_id)
    report(context, f"facts of {result.numbers} distinct numbers for {result.rows} calls")
    return dg.MaterializeResult(
        metadata={
            **parquet_metadata([cdr.warehouse.batch_file("enriched", batch_id)]),
            "numbers_with_facts": result.numbers,
        }
    )
