"""What a step tells its reader: UI metadata for Parquet tables, and one-line summaries.

Summaries go to the run's log (the UI) and to the ``cdr_assets.progress`` Python logger,
which ``cdr-pipeline process`` shows as progress lines.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb

from cdr_assets.lib.warehouse import read_parquet_sql

PROGRESS_LOGGER = "cdr_assets.progress"


def report(context: dg.AssetExecutionContext, message: str) -> None:
    context.log.info(message)
    logging.getLogger(PROGRESS_LOGGER).info("%s: %s", context.op_execution_context.op.name, message)


def parquet_metadata(paths: list[Path], preview_rows: int = 5) -> dict[str, Any]:
    if not paths:
        return {"dagster/row_count": 0}
    source = read_parquet_sql(paths)
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")  # instants are shown in UTC, whatever the machine's
        count_row = con.execute(f"SELECT count(*) FROM {source}").fetchone()
        columns = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
        # Every value as DuckDB's text, so that no value becomes a pandas datetime, which
        # cannot hold an instant after 2262 (a valid call in year 9999 would fail the step).
        preview = con.execute(
            f"SELECT COLUMNS(*)::VARCHAR FROM {source} LIMIT {int(preview_rows)}"
        ).df()
    return {
        "dagster/row_count": int(count_row[0]) if count_row else 0,
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(name=str(c[0]), type=str(c[1])) for c in columns]
        ),
        "preview": dg.MetadataValue.md(preview.to_markdown(index=False)),
        "files": len(paths),
    }
