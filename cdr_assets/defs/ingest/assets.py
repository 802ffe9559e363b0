"""Ingestion layers: landing files -> raw -> validated / rejected -> deduplicated daily cdrs.

Every asset here is thin: it calls a step of ``cdr_assets.lib.ingest`` and reports what it
wrote. Batch assets are partitioned by landing batch; ``cdrs`` by UTC call date. A batch run
writes the days it touched and records them as materialisations of those ``cdrs``
partitions, so one run per sensor tick keeps every touched day current.
"""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow.parquet as pq
from pydantic import Field

from cdr_assets.defs.fraud.assets import publish_fraud_alerts
from cdr_assets.defs.fraud.resources import FraudRules
from cdr_assets.defs.marts.assets import publish_marts
from cdr_assets.defs.partitions import call_dates, landing_batches
from cdr_assets.defs.reporting import parquet_metadata, report
from cdr_assets.defs.resources import CdrPipeline
from cdr_assets.lib import ingest
from cdr_assets.lib.schemas import validated_schema, with_utc_instants
from cdr_assets.lib.warehouse import Warehouse, sql_file_list

OWNERS = ["team:cdr-data"]
POOL = "cdr_warehouse"


class RawCdrsConfig(dg.Config):
    """Files the landing sensor (or ``cdr-pipeline process``) assigned to the batch."""

    files: list[str] = Field(default_factory=list)


@dg.asset(
    partitions_def=landing_batches,
    group_name="ingest",
    kinds={"parquet", "python"},
    owners=OWNERS,
    pool=POOL,
)
def raw_cdrs(
    context: dg.AssetExecutionContext, config: RawCdrsConfig, cdr: CdrPipeline
) -> dg.MaterializeResult:
    """Every row of the batch's files as read: strings, with source_file and source_row."""
    batch_id = context.partition_key
    with cdr.writing() as warehouse:
        manifest = warehouse.read_manifest(batch_id)
        files = manifest.files if manifest is not None else config.files
        # A recorded batch may have no file: every file it listed was left to another batch.
        if manifest is None and not files:
            raise dg.Failure(
                f"batch {batch_id} has no files: it was never taken from the landing folder"
            )
        result = ingest.read_batch_files(cdr.settings, warehouse, batch_id, files)
    left = ""
    if result.left_to:
        others = ", ".join(sorted(set(result.left_to.values())))
        left = f"; {len(result.left_to)} listed files left to batch {others}, which took them"
    report(
        context,
        f"read {result.files} files ({result.files_rejected} rejected), "
        f"{result.rows_read} rows{left}",
    )
    return dg.MaterializeResult(
        metadata={
            **parquet_metadata([warehouse.batch_file("raw", batch_id)]),
            "files": result.files,
            "files_rejected": result.files_rejected,
        }
    )


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "validated_cdrs",
            deps=["raw_cdrs"],
            description="Accepted rows, typed: E.164 numbers, UTC instants, codes, flags.",
            kinds={"parquet", "duckdb", "pandera"},
            owners=OWNERS,
        ),
        dg.AssetSpec(
            "rejected_cdrs",
            deps=["raw_cdrs"],
            description="Refused rows with their raw text and every reason code.",
            kinds={"parquet", "duckdb"},
            owners=OWNERS,
        ),
    ],
    check_specs=[
        dg.AssetCheckSpec(
            "matches_validated_schema",
            asset="validated_cdrs",
            description="Every accepted row satisfies the pandera validated_cdr schema.",
        )
    ],
    partitions_def=landing_batches,
    group_name="ingest",
    pool=POOL,
)
def validate_cdrs(
    context: dg.AssetExecutionContext, cdr: CdrPipeline
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Split the batch's raw rows by the contract's rules (pandera), typing the accepted."""
    batch_id = context.partition_key
    warehouse = cdr.warehouse
    result = ingest.validate_batch_files(cdr.settings, warehouse, batch_id)
    report(
        context,
        f"{result.rows_read} rows: {result.rows_accepted} accepted, "
        f"{result.rows_rejected} rejected {result.reason_counts}",
    )
    validated_path = warehouse.batch_file("validated", batch_id)
    yield dg.MaterializeResult(
        asset_key="validated_cdrs",
        metadata={**parquet_metadata([validated_path]), "rows_read": result.rows_read},
    )
    yield dg.MaterializeResult(
        asset_key="rejected_cdrs",
        metadata={
            **parquet_metadata([warehouse.batch_file("rejected_cdrs", batch_id)]),
            "reasons": dg.MetadataValue.json(result.reason_counts),
        },
    )
    yield schema_check_result("validated_cdrs", [validated_path], cdr.max_duration_seconds)


# Rows validated at a time by the schema checks: memory stays flat however large the batch.
SCHEMA_CHECK_ROWS = 1_000_000


def schema_check_result(
    asset: str, paths: list[Path], max_duration_seconds: int
) -> dg.AssetCheckResult:
    """Run the validated_cdr pandera schema over Parquet files, a chunk of rows at a time and
    only on the columns it states; failures become metadata.

    polars reads the chunks (its Parquet reader straight into the frames pandera checks):
    on a 10M-row batch the check took 1.7 s instead of 4.3 s through DuckDB and Arrow.
    A column a file lacks is left out, for pandera to report.
    """
    import pandera.errors
    import polars as pl

    schema = validated_schema(max_duration_seconds)
    rows = failures = 0
    samples: list[pl.DataFrame] = []
    for path in paths:
        with pq.ParquetFile(path) as parquet:  # its footer, read once
            names, rows_in_file = parquet.schema_arrow.names, parquet.metadata.num_rows
        stated = [name for name in names if name in schema.columns]
        scan = pl.scan_parquet(path).select(stated)
        for start in range(0, rows_in_file, SCHEMA_CHECK_ROWS):
            frame = with_utc_instants(scan.slice(start, SCHEMA_CHECK_ROWS).collect())
            try:
                schema.validate(frame, lazy=True)
            except pandera.errors.SchemaErrors as errors:
                cases = errors.failure_cases
                failures += cases.height
                if sum(s.height for s in samples) < 20:
                    samples.append(cases.head(20))
            rows += frame.height
    if failures:
        sample = pl.concat(samples, how="diagonal_relaxed").head(20)
        return dg.AssetCheckResult(
            asset_key=asset,
            passed=False,
            metadata={
                "rows": rows,
                "failures": failures,
                "sample": dg.MetadataValue.md(sample.to_pandas().to_markdown()),
            },
        )
    return dg.AssetCheckResult(asset_key=asset, passed=True, metadata={"rows": rows})


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "duplicate_cdrs",
            deps=["enriched_cdrs"],
            description="Accepted rows whose call_id landed before: set aside, first wins.",
            kinds={"parquet", "duckdb"},
            owners=OWNERS,
        ),
        dg.AssetSpec(
            "landed_files",
            deps=["enriched_cdrs", "rejected_cdrs"],
            description="One row per landed file: status, rows read/accepted/rejected/duplicate.",
            kinds={"parquet", "duckdb"},
            owners=OWNERS,
        ),
    ],
    check_specs=[
        dg.AssetCheckSpec(
            "rows_add_up",
            asset="landed_files",
            blocking=True,
            description="Per file: rows read = accepted + rejected; a rejected file has 0 rows.",
        ),
        dg.AssetCheckSpec(
            "cdrs_call_id_unique",
            asset="duplicate_cdrs",
            blocking=True,
            description="No call_id this batch kept occurs twice across every day of cdrs "
            "(within the batch, or in another batch's files).",
        ),
    ],
    partitions_def=landing_batches,
    group_name="ingest",
    pool=POOL,
)
def deduplicate_cdrs(
    context: dg.AssetExecutionContext, cdr: CdrPipeline, fraud_rules: FraudRules
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Keep the first landing of each call_id in the daily cdrs; set the others aside."""
    batch_id = context.partition_key
    with cdr.writing() as warehouse:
        result = ingest.deduplicate_batch(warehouse, batch_id)
        days = sorted(result.days)
        context.instance.add_dynamic_partitions(call_dates.name or "call_dates", days)
        for day in result.days_changed:
            context.log_event(
                dg.AssetMaterialization(
                    asset_key="cdrs",
                    partition=day,
                    metadata={
                        "rows_from_batch": result.days.get(day, 0),
                        "batch": batch_id,
                        "dagster/row_count": _count(warehouse.table_files_for_day(day)),
                    },
                )
            )
        report(
            context,
            f"kept {result.rows_kept} calls over {len(days)} days, "
            f"{result.rows_duplicate} duplicates set aside",
        )
        # The days this batch changed, and their months, are current when the run ends.
        publish_marts(context, warehouse, result.days_changed)
        publish_fraud_alerts(context, warehouse, result.days_changed, fraud_rules.load())
        # Calls, marts and alerts are written; the serving file is left (until it is
        # published, cli.process reruns the batch, which rewrites the same files).
        warehouse.mark_deduplicated(batch_id)
    landed_path = warehouse.batch_file("landed_files", batch_id)
    yield dg.MaterializeResult(
        asset_key="duplicate_cdrs",
        metadata=parquet_metadata([warehouse.batch_file("duplicate_cdrs", batch_id)]),
    )
    yield dg.MaterializeResult(asset_key="landed_files", metadata=parquet_metadata([landed_path]))
    yield _rows_add_up(landed_path)
    yield batch_call_ids_unique(warehouse, batch_id)


def _count(paths: list[Path]) -> int:
    if not paths:
        return 0
    with duckdb.connect() as con:
        row = con.execute(f"SELECT count(*) FROM read_parquet({sql_file_list(paths)})").fetchone()
    return int(row[0]) if row else 0


def _rows_add_up(landed_path: Path) -> dg.AssetCheckResult:
    with duckdb.connect() as con:
        broken = con.execute(
            f"""SELECT source_file, status, rows_read, rows_accepted, rows_rejected
            FROM read_parquet({sql_file_list([landed_path])})
            WHERE rows_read <> rows_accepted + rows_rejected
               OR (status = 'rejected' AND rows_read + rows_accepted + rows_rejected <> 0)"""
        ).fetchall()
    return dg.AssetCheckResult(
        asset_key="landed_files",
        check_name="rows_add_up",
        passed=not broken,
        metadata={
            "files_not_adding_up": dg.MetadataValue.json([list(map(str, b)) for b in broken])
        },
    )


def batch_call_ids_unique(warehouse: Warehouse, batch_id: str) -> dg.AssetCheckResult:
    """No call_id the batch kept occurs twice in cdrs: within the batch's files, or in any
    other batch's. Every batch checks its own rows this way, so cdrs as a whole never holds
    a call_id twice; the other batches' files are read for the batch's ids only (a
    semi-join on their call_id column), not counted distinct all over again."""
    files = warehouse.table_files("cdrs")
    mine = [p for p in files if p.stem == batch_id]
    others = [p for p in files if p.stem != batch_id]
    rows = distinct = clashes = 0
    if mine:
        with duckdb.connect() as con:
            con.execute(
                f"CREATE TEMP TABLE kept AS SELECT call_id FROM read_parquet({sql_file_list(mine)})"
            )
            row = con.execute("SELECT count(*), count(DISTINCT call_id) FROM kept").fetchone()
            rows, distinct = (int(row[0]), int(row[1])) if row else (0, 0)
            if others:
                found = con.execute(
                    f"SELECT count(*) FROM read_parquet({sql_file_list(others)}) "
                    "WHERE call_id IN (SELECT call_id FROM kept)"
                ).fetchone()
                clashes = int(found[0]) if found else 0
    return dg.AssetCheckResult(
        asset_key="duplicate_cdrs",
        check_name="cdrs_call_id_unique",
        passed=rows == distinct and clashes == 0,
        metadata={
            "batch_rows": rows,
            "distinct_call_ids": distinct,
            "rows_of_other_batches_with_these_ids": clashes,
        },
    )


def _call_id_unique(paths: list[Path]) -> dg.AssetCheckResult:
    if not paths:
        return dg.AssetCheckResult(
            asset_key="duplicate_cdrs", check_name="cdrs_call_id_unique", passed=True
        )
    with duckdb.connect() as con:
        row = con.execute(
            f"SELECT count(*), count(DISTINCT call_id) FROM read_parquet({sql_file_list(paths)})"
        ).fetchone()
    total, distinct = (int(row[0]), int(row[1])) if row else (0, 0)
    return dg.AssetCheckResult(
        asset_key="duplicate_cdrs",
        check_name="cdrs_call_id_unique",
        passed=total == distinct,
        metadata={"cdrs_rows": total, "distinct_call_ids": distinct},
    )


@dg.asset(
    partitions_def=call_dates,
    deps=[dg.AssetDep("enriched_cdrs", partition_mapping=dg.AllPartitionMapping())],
    group_name="ingest",
    kinds={"parquet", "duckdb"},
    owners=OWNERS,
    pool=POOL,
    check_specs=[
        dg.AssetCheckSpec("call_id_unique", asset="cdrs", blocking=True),
        dg.AssetCheckSpec("matches_validated_schema", asset="cdrs"),
    ],
)
def cdrs(
    context: dg.AssetExecutionContext, cdr: CdrPipeline
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """One accepted, deduplicated call per row, for one UTC call date (first landing wins)."""
    day = context.partition_key
    with cdr.writing() as warehouse:
        rows = ingest.rebuild_cdrs_day(warehouse, day)
    paths = warehouse.table_files_for_day(day)
    report(context, f"{day}: {rows} calls from {len(paths)} batch files")
    yield dg.MaterializeResult(metadata=parquet_metadata(paths))
    unique = _call_id_unique(paths)
    yield dg.AssetCheckResult(
        asset_key="cdrs",
        check_name="call_id_unique",
        passed=unique.passed,
        metadata=dict(unique.metadata),
    )
    schema = schema_check_result("cdrs", paths, cdr.max_duration_seconds)
    yield dg.AssetCheckResult(
        asset_key="cdrs",
        check_name="matches_validated_schema",
        passed=schema.passed,
        metadata=dict(schema.metadata),
    )
