"""The serving file BI tools read: ``cdr.duckdb``, rebuilt aside and swapped in atomically."""

import dagster as dg

from cdr_assets.defs.reporting import report
from cdr_assets.defs.resources import CdrPipeline
from cdr_assets.lib.marts import MART_TABLES
from cdr_assets.lib.serving import publish_serving_file


@dg.asset(
    deps=["landed_files", "rejected_cdrs", "duplicate_cdrs", "cdrs", *MART_TABLES, "fraud_alerts"],
    group_name="serving",
    kinds={"duckdb"},
    owners=["team:cdr-data"],
    pool="cdr_warehouse",
)
def serving_db(context: dg.AssetExecutionContext, cdr: CdrPipeline) -> dg.MaterializeResult:
    """cdr.duckdb: every contract table by name, for read-only connections from BI tools."""
    with cdr.writing() as warehouse:
        counts = publish_serving_file(warehouse, cdr.caller_numbers)
    report(context, f"published {warehouse.serving_path}: {counts}")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(warehouse.serving_path)),
            **{f"rows/{table}": n for table, n in counts.items()},
        }
    )
