"""The serving file ``cdr.duckdb``: every contract table by name, for BI tools, read-only.

The file holds views over the call-level Parquet files published at the moment it was built
(absolute paths, so it works from any working directory), and copies of the marts and the
fraud alerts as tables. It is built under a temporary name beside the old one and renamed
over it: a reader holding the old file open keeps a consistent snapshot and never blocks the
writer; the next connection sees the new tables.

Why the marts are copied: a run rewrites a mart partition under the same name
(``daily_summary/<day>.parquet``), while the call-level files of a batch are new files. A
view over the mart files would show a reader holding an old serving file the new marts beside
the old calls. The marts are small (rows per day per carrier and destination), so the copy is
cheap, and BI queries on them read no Parquet at all.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import duckdb
import pyarrow as pa

from cdr_assets.lib import privacy
from cdr_assets.lib.marts import MART_TABLES
from cdr_assets.lib.warehouse import Warehouse, read_parquet_sql

# Column types of each table, for the view shown while a table has no file yet.
EMPTY_TABLES: dict[str, str] = {
    "cdrs": """call_id VARCHAR, caller_number VARCHAR, called_number VARCHAR,
        start_time TIMESTAMPTZ, end_time TIMESTAMPTZ, duration_seconds BIGINT,
        carrier_id VARCHAR, call_type VARCHAR, country_code VARCHAR, disposition VARCHAR,
        call_date DATE, called_country VARCHAR, caller_country VARCHAR, flags VARCHAR[],
        derived_fields VARCHAR[], source_file VARCHAR,
        source_row BIGINT, batch_id VARCHAR, billable_seconds BIGINT, rate_prefix VARCHAR,
        destination VARCHAR, rate_per_minute DECIMAL(38,12), connection_fee DECIMAL(38,12),
        cost DECIMAL(38,4), retail_prefix VARCHAR, retail_destination VARCHAR,
        retail_rate_per_minute DECIMAL(38,12), retail_billable_seconds BIGINT,
        revenue DECIMAL(38,4), margin DECIMAL(38,4), rating_status VARCHAR,
        deck_version VARCHAR, called_country_name VARCHAR, called_number_type VARCHAR,
        called_region VARCHAR, called_carrier VARCHAR, caller_number_type VARCHAR,
        caller_region VARCHAR, caller_carrier VARCHAR, caller_timezones VARCHAR[],
        caller_timezone VARCHAR, local_start_time TIMESTAMP, batch_seq BIGINT,
        caller_hash VARCHAR""",
    "rejected_cdrs": """source_file VARCHAR, source_row BIGINT, raw_record VARCHAR,
        reasons VARCHAR[], detail VARCHAR, batch_id VARCHAR""",
    "duplicate_cdrs": """call_id VARCHAR, source_file VARCHAR, source_row BIGINT,
        first_source_file VARCHAR, first_source_row BIGINT, identical BOOLEAN,
        call_date DATE, batch_id VARCHAR""",
    "landed_files": """source_file VARCHAR, status VARCHAR, rows_read BIGINT,
        rows_accepted BIGINT, rows_rejected BIGINT, rows_duplicate BIGINT, error VARCHAR,
        size_bytes BIGINT, content_sha256 VARCHAR, replay_of VARCHAR, stored_path VARCHAR,
        batch_id VARCHAR, batch_seq BIGINT, landed_at TIMESTAMPTZ""",
    "daily_summary": """call_date DATE, total_calls BIGINT, answered_calls BIGINT,
        total_duration_seconds BIGINT, billable_seconds BIGINT, total_cost DECIMAL(38,4),
        total_revenue DECIMAL(38,4), total_margin DECIMAL(38,4), local_calls BIGINT,
        national_calls BIGINT, international_calls BIGINT, asr DOUBLE, acd_seconds DOUBLE,
        answered_seconds BIGINT, unrated_calls BIGINT, busy_hour TIMESTAMPTZ, busy_hour_erlangs
        DOUBLE, busy_hour_calls BIGINT""",
    "hourly_traffic": """call_date DATE, call_hour TIMESTAMPTZ, calls BIGINT, answered_calls
        BIGINT, duration_seconds BIGINT, answered_seconds BIGINT, billable_seconds BIGINT, cost
        DECIMAL(38,4), revenue DECIMAL(38,4), margin DECIMAL(38,4), erlangs DOUBLE, asr DOUBLE,
        acd_seconds DOUBLE""",
    "carrier_daily": """call_date DATE, carrier_id VARCHAR, calls BIGINT, answered_calls BIGINT,
        asr DOUBLE, acd_seconds DOUBLE, duration_seconds BIGINT, answered_seconds BIGINT,
        billable_seconds BIGINT, cost DECIMAL(38,4), revenue DECIMAL(38,4), margin
        DECIMAL(38,4), cost_per_minute DECIMAL(38,6), revenue_per_minute DECIMAL(38,6)""",
    "destination_daily": """call_date DATE, called_country VARCHAR, called_country_name VARCHAR,
        calls BIGINT, answered_calls BIGINT, asr DOUBLE, acd_seconds DOUBLE, duration_seconds
        BIGINT, answered_seconds BIGINT, billable_seconds BIGINT, cost DECIMAL(38,4), revenue
        DECIMAL(38,4), margin DECIMAL(38,4), share_pct DOUBLE""",
    "route_daily": """call_date DATE, carrier_id VARCHAR, called_country VARCHAR, call_type
        VARCHAR, calls BIGINT, answered_calls BIGINT, duration_seconds BIGINT, answered_seconds
        BIGINT, billable_seconds BIGINT, cost DECIMAL(38,4), revenue DECIMAL(38,4), margin
        DECIMAL(38,4)""",
    "monthly_summary": """month VARCHAR, carrier_id VARCHAR, called_country VARCHAR, call_type
        VARCHAR, calls BIGINT, answered_calls BIGINT, duration_seconds BIGINT, answered_seconds
        BIGINT, billable_seconds BIGINT, cost DECIMAL(38,4), revenue DECIMAL(38,4), margin
        DECIMAL(38,4), days BIGINT""",
    "fraud_alerts": """call_date DATE, alert_id VARCHAR, rule VARCHAR, severity VARCHAR,
        subject_type VARCHAR, subject VARCHAR, window_start TIMESTAMPTZ, window_end TIMESTAMPTZ,
        metrics VARCHAR, baseline VARCHAR, sample_call_ids VARCHAR[], score DOUBLE,
        summary VARCHAR, config_version VARCHAR""",
}


# Tables copied into the serving file rather than viewed: rewritten in place by runs (see
# above); hashed alert subjects need the key, which must not reach the file.
COPIED_TABLES = frozenset({*MART_TABLES, "fraud_alerts"})


def _empty_select(columns: str) -> str:
    # Split on the commas between columns, not those inside a type such as DECIMAL(38,4).
    parts = [c.strip() for c in re.split(r",(?![^()]*\))", columns) if c.strip()]
    cols = ", ".join(f"CAST(NULL AS {p.split(None, 1)[1]}) AS {p.split(None, 1)[0]}" for p in parts)
    return f"SELECT {cols} WHERE false"


def view_sql(warehouse: Warehouse, table: str, caller_numbers: str = "clear") -> str:
    files = warehouse.table_files(table)
    source = f"({_empty_select(EMPTY_TABLES[table])})" if not files else read_parquet_sql(files)
    if table == "cdrs":
        source = privacy.private_cdrs(source, caller_numbers)
    elif table == "rejected_cdrs":
        source = privacy.private_rejected(source, caller_numbers)
    elif table == "fraud_alerts":
        source = privacy.private_alerts(source, caller_numbers)
    return f"SELECT * FROM {source}"


def _register_subject_hashes(con: duckdb.DuckDBPyConnection, warehouse: Warehouse) -> None:
    """The keyed hash of each caller named by an alert, for this connection only.

    Neither the key nor the clear numbers may reach the serving file: the few alert rows are
    hashed here, like ``cdrs.caller_hash``, and stored as a table.
    """
    files = warehouse.table_files("fraud_alerts")
    numbers: list[str] = []
    if files:
        rows = con.execute(
            f"SELECT list(DISTINCT subject) FROM {read_parquet_sql(files)} "
            "WHERE subject_type = 'caller' AND subject IS NOT NULL"
        ).fetchall()
        numbers = (rows[0][0] if rows else None) or []
    hashes = privacy.caller_hashes(pa.array(numbers, pa.string()), privacy.caller_key(warehouse))
    con.register(privacy.SUBJECT_HASHES, hashes)


def publish_serving_file(warehouse: Warehouse, caller_numbers: str = "clear") -> dict[str, int]:
    """Rebuild ``cdr.duckdb`` aside and swap it in; returns each table's row count.

    ``caller_numbers`` (clear, hash or mask) is what the views show of caller numbers. Call
    under the writer lock: every deduplicated batch is in the new file, so it is marked
    published (finished).
    """
    target = warehouse.serving_path
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    counts: dict[str, int] = {}
    try:
        with duckdb.connect(str(tmp)) as con:
            if caller_numbers == "hash":
                _register_subject_hashes(con, warehouse)
            for table in EMPTY_TABLES:
                kind = "TABLE" if table in COPIED_TABLES else "VIEW"
                con.execute(
                    f"CREATE {kind} {table} AS {view_sql(warehouse, table, caller_numbers)}"
                )
                row = con.execute(f"SELECT count(*) FROM {table}").fetchone()
                counts[table] = int(row[0]) if row else 0
            con.execute("CHECKPOINT")
        os.replace(tmp, target)
        warehouse.mark_published()
    finally:
        tmp.unlink(missing_ok=True)
        Path(f"{tmp}.wal").unlink(missing_ok=True)
    return counts
