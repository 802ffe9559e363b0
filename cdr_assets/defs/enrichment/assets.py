"""Enrichment: each batch's calls with geography, number types, carriers and time zones."""

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
    """Rated calls with country names, number types, regions, carriers, caller time zone."""
    batch_id = context.partition_key
    result = ingest.enrich_batch(cdr.settings, cdr.warehouse, batch_id)
    report(context, f"enriched {result.rows} calls ({result.numbers} distinct numbers with facts)")
    return dg.MaterializeResult(
        metadata={
            **parquet_metadata([cdr.warehouse.batch_file("enriched", batch_id)]),
            "numbers_with_facts": result.numbers,
        }
    )
