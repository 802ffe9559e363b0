"""From raw rows (strings) to typed, normalised accepted rows and refused rows with reasons.

Three vectorised steps over a batch, with the data kept in DuckDB and polars:

1. ``PARSE_SQL`` types every value that can be typed (timestamps in UTC, whole-second
   durations, case-normalised codes, numbers through the number-facts table) and keeps the
   stripped strings beside them;
2. the pandera rules schema (``schemas.row_rules_schema``) checks the parsed rows lazily,
   ``RULE_CHUNK_ROWS`` at a time, and its failure cases give each refused row its reason
   codes;
3. ``ACCEPTED_SQL`` derives what the contract derives (end time or duration, disposition,
   country code, call type, call date) and the flags of odd but usable rows;
   ``REJECTED_SQL`` gives each refused row its raw text and reasons.

The parse can be a view (``check_rows(materialize=False)``): a batch of millions of rows is
then parsed as DuckDB streams it, once for the rules and once for the accepted rows, and
never held whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pandera.errors
import polars as pl
import pyarrow as pa

from cdr_assets.lib.readers import CANONICAL_FIELDS, record_text_sql
from cdr_assets.lib.schemas import (
    FLAGS,
    PRESENCE_COLUMNS,
    REASONS,
    RULE_COLUMNS,
    row_rules_schema,
)

ISO_8601_PATTERN = (
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.,][0-9]+)?)?)?"
    r"(Z|z|[+-][0-9]{2}(:?[0-9]{2})?)?"
)

# The ISO 8601 shape, inlined as a SQL literal (a view holds no parameter). Naive timestamps
# are read in the session's TimeZone, which check_rows sets to CDR_SOURCE_TIMEZONE, and
# offsets are honoured. An instant before 0001-01-01 or from 10000-01-01 UTC (which an
# offset or the source zone can make of 0001-01-01 or 9999-12-31) is refused too: its
# call_date has no YYYY-MM-DD form, so neither its cdrs day nor that day's marts could be
# written. The bounds are those instants in microseconds since the epoch:
# 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z.
_ISO_LITERAL = "'" + ISO_8601_PATTERN.replace("'", "''") + "'"

# The caller's columns of the parse: only accepted rows need them (the rules do not).
_CALLER_COLUMNS = """
    r.caller_number AS caller_raw,
    fr.e164 AS caller_e164,
    coalesce(fr.possible, false) AS caller_possible,
    fr.region AS caller_region,
    fr.geographic AS caller_geographic,
    fr.area_code AS caller_area_code,"""
_CALLER_JOIN = "LEFT JOIN number_facts AS fr ON fr.number = r.caller_number"


# The query needs ``raw_batch`` (the raw columns and a unique ``row_idx``) and
# ``number_facts`` (FACT_COLUMNS); ``check_rows`` makes the table or view ``parsed`` of it.
_PARSE_TEMPLATE = f"""
SELECT
    r.row_idx,
    r.source_file,
    r.source_row,
    r.raw_record,
    r.malformed,
    r.call_id,
    r.carrier_id,
    r.called_number AS called_raw,
    fc.e164 AS called_e164,
    fc.possible AS called_possible,
    fc.valid AS called_valid,
    fc.region AS called_region,
    fc.geographic AS called_geographic,
    fc.area_code AS called_area_code,
    {{caller_columns}}
    r.start_time AS start_raw,
    CASE WHEN epoch_us(r.start_instant) BETWEEN -62135596800000000 AND 253402300799999999
        THEN r.start_instant END AS start_ts,
    r.end_time AS end_raw,
    CASE WHEN epoch_us(r.end_instant) BETWEEN -62135596800000000 AND 253402300799999999
        THEN r.end_instant END AS end_ts,
    r.duration_seconds AS duration_raw,
    -- Digits only; leading zeros allowed. A value too long for BIGINT is over any maximum.
    CASE WHEN regexp_full_match(r.duration_seconds, '[0-9]+')
        AND length(ltrim(r.duration_seconds, '0')) <= 18
        THEN CAST(r.duration_seconds AS BIGINT) END AS duration_given,
    -- Derived from the two instants (start_ts and end_ts above), whole seconds with the
    -- fraction dropped; only for a row that gives no duration and whose end is not before
    -- its start.
    CASE WHEN r.duration_seconds IS NULL AND end_ts >= start_ts
        THEN (epoch_us(end_ts) - epoch_us(start_ts)) // 1000000 END AS derived_duration,
    r.call_type AS call_type_raw,
    lower(r.call_type) AS call_type,
    r.country_code AS country_code_raw,
    upper(r.country_code) AS country_code,
    r.disposition AS disposition_raw,
    upper(r.disposition) AS disposition
FROM (
    SELECT *,
        CASE WHEN regexp_full_match(start_time, {_ISO_LITERAL})
            THEN try_cast(replace(start_time, ',', '.') AS TIMESTAMPTZ) END AS start_instant,
        CASE WHEN regexp_full_match(end_time, {_ISO_LITERAL})
            THEN try_cast(replace(end_time, ',', '.') AS TIMESTAMPTZ) END AS end_instant
    FROM raw_batch
) AS r
LEFT JOIN number_facts AS fc ON fc.number = r.called_number
{{caller_join}}
"""


def _parse_sql(caller: bool) -> str:
    return _PARSE_TEMPLATE.replace(
        "{caller_columns}", _CALLER_COLUMNS.strip() if caller else ""
    ).replace("{caller_join}", _CALLER_JOIN if caller else "")


PARSE_SQL = _parse_sql(caller=True)
# The parse the rules read when ``parsed`` is a view: without the caller's facts, whose
# join would cost a tenth of the rules' pass for nothing (on a 10M-row day 6.9 s without
# it, 7.6 s with it).
RULES_PARSE_SQL = _parse_sql(caller=False)

# The number facts PARSE_SQL reads (``number`` is the join key).
FACT_COLUMNS = ("number", "e164", "possible", "valid", "region", "geographic", "area_code")

# A record the reader left implied (raw_record null: the canonical fields joined by commas)
# is written out again from the fields as read.
_RECORD_TEXT = record_text_sql({field: f"r.{field}" for field in CANONICAL_FIELDS})

# Refused rows come from the raw rows themselves: nothing of the parse is needed.
REJECTED_SQL = f"""
SELECT
    r.source_file,
    r.source_row,
    coalesce(r.raw_record, {_RECORD_TEXT}) AS raw_record,
    f.reasons,
    r.source_file || ' row ' || r.source_row || ': ' || array_to_string(f.reasons, ', ')
        AS detail,
    $batch_id AS batch_id
FROM raw_batch AS r
JOIN row_failures AS f USING (row_idx)
ORDER BY r.row_idx
"""

ACCEPTED_SQL = """
WITH accepted AS (
    SELECT p.*,
        coalesce(p.duration_given, p.derived_duration) AS duration_seconds,
        coalesce(p.end_ts, p.start_ts + to_seconds(p.duration_given)) AS end_time,
        CASE WHEN length(p.called_region) = 2 THEN p.called_region END AS called_country,
        CASE WHEN length(p.caller_region) = 2 THEN p.caller_region END AS caller_country
    FROM parsed AS p
    ANTI JOIN row_failures AS f USING (row_idx)
), derived AS (
    SELECT *,
        CASE
            WHEN caller_country IS NULL THEN NULL
            WHEN called_country IS DISTINCT FROM caller_country THEN 'international'
            WHEN caller_geographic AND called_geographic
                AND caller_area_code IS NOT NULL
                AND caller_area_code = called_area_code THEN 'local'
            ELSE 'national'
        END AS derived_call_type
    FROM accepted
)
SELECT
    call_id,
    coalesce(caller_e164, caller_raw) AS caller_number,
    called_e164 AS called_number,
    start_ts AS start_time,
    end_time,
    duration_seconds,
    carrier_id,
    coalesce(call_type, derived_call_type) AS call_type,
    coalesce(country_code, called_country) AS country_code,
    coalesce(disposition, CASE WHEN duration_seconds > 0 THEN 'ANSWERED' ELSE 'NO_ANSWER' END)
        AS disposition,
    CAST(timezone('UTC', start_ts) AS DATE) AS call_date,
    called_country,
    caller_country,
    list_filter([
        CASE WHEN duration_given IS NOT NULL AND end_ts IS NOT NULL
            AND abs(duration_given * 1000000 - (epoch_us(end_ts) - epoch_us(start_ts)))
                > 5000000 THEN 'duration_mismatch' END,
        CASE WHEN country_code IS NOT NULL AND called_country IS NOT NULL
            AND country_code <> called_country THEN 'country_mismatch' END,
        CASE WHEN call_type IS NOT NULL AND caller_country IS NOT NULL
            AND called_country IS NOT NULL
            AND ((call_type = 'international') = (caller_country = called_country))
            THEN 'call_type_mismatch' END,
        CASE WHEN caller_raw IS NOT NULL AND NOT caller_possible THEN 'caller_unparsed' END,
        CASE WHEN NOT called_valid THEN 'called_number_unallocated' END,
        CASE WHEN caller_e164 = called_e164 THEN 'self_call' END
    ], lambda flag: flag IS NOT NULL) AS flags,
    list_filter([
        CASE WHEN end_ts IS NULL THEN 'end_time' END,
        CASE WHEN duration_given IS NULL THEN 'duration_seconds' END,
        CASE WHEN call_type IS NULL AND derived_call_type IS NOT NULL THEN 'call_type' END,
        CASE WHEN country_code IS NULL AND called_country IS NOT NULL THEN 'country_code' END,
        CASE WHEN disposition IS NULL THEN 'disposition' END
    ], lambda field: field IS NOT NULL) AS derived_fields,
    source_file,
    source_row,
    $batch_id AS batch_id
FROM derived
"""


@dataclass(frozen=True)
class ValidationResult:
    rows_read: int
    rows_accepted: int
    rows_rejected: int
    reason_counts: dict[str, int]


_NO_FAILURES = pl.DataFrame(
    {"row_idx": [], "reasons": []},
    schema={"row_idx": pl.Int64, "reasons": pl.List(pl.String)},
)


def find_row_failures(parsed: pl.DataFrame, max_duration_seconds: int) -> pl.DataFrame:
    """(row_idx, reasons) for every row that breaks a rule, reasons in contract order.

    ``row_idx`` is the row's value of the column ``row_idx`` when ``parsed`` has one (its
    rows then need no order), else its position in ``parsed``."""
    schema = row_rules_schema(max_duration_seconds)
    try:
        schema.validate(parsed, lazy=True)
    except pandera.errors.SchemaErrors as errors:
        cases = errors.failure_cases
    else:
        return _NO_FAILURES.clear()
    unexpected = cases.filter(~pl.col("check").is_in(REASONS))
    if unexpected.height:
        # A column of the parsed frame has the wrong type: a bug here, not bad input.
        raise RuntimeError(f"parsed CDRs do not match the rules schema:\n{unexpected}")
    order = {reason: i for i, reason in enumerate(REASONS)}
    if "row_idx" in parsed.columns:
        cases = cases.with_columns(index=parsed.get_column("row_idx").gather(cases["index"]))
    return (
        cases.select(
            pl.col("index").cast(pl.Int64).alias("row_idx"),
            pl.col("check").alias("reason"),
            pl.col("check").replace_strict(order, return_dtype=pl.Int32).alias("order"),
        )
        .unique()
        .sort("row_idx", "order")
        .group_by("row_idx", maintain_order=True)
        .agg(pl.col("reason").alias("reasons"))
    )


# What check_rows reads of ``parsed`` for the rules: ``row_idx`` and the RULE_COLUMNS, those
# the rules read only for presence as booleans (true where given, null where not). Their
# text was the costly part of handing the rows to polars: on a 10M-row day the conversion
# alone took 2.4 s, pandera's check 3.4 s.
RULES_SELECT = ", ".join(
    [
        "row_idx",
        *(
            f"CASE WHEN {name} IS NOT NULL THEN true END AS {name}"
            if name in PRESENCE_COLUMNS
            else name
            for name in RULE_COLUMNS
        ),
    ]
)

# Rows the rules schema checks at a time: pandera's cost per call is small beside this, and a
# chunk's polars frame of the rule columns stays a few hundred MB.
RULE_CHUNK_ROWS = 750_000


def check_rows(
    con: duckdb.DuckDBPyConnection,
    *,
    source_timezone: str,
    max_duration_seconds: int,
    materialize: bool = True,
) -> pl.DataFrame:
    """Parse ``raw_batch`` with ``number_facts`` into ``parsed`` and check every row.

    Registers the failures as ``row_failures`` and returns them; ``ACCEPTED_SQL`` and
    ``REJECTED_SQL`` can then be run on ``con``. The session's TimeZone is left at
    ``source_timezone``, the zone naive timestamps are read in. With ``materialize=False``
    ``parsed`` is a view, parsed again by each query that reads it (the rules read
    ``RULES_PARSE_SQL``, the parse without the caller's facts); otherwise a temp table.
    """
    con.execute(f"SET TimeZone = '{source_timezone}'")  # a validated IANA name, not file data
    kind = "TABLE" if materialize else "VIEW"
    con.execute(f"CREATE OR REPLACE TEMP {kind} parsed AS {PARSE_SQL}")
    rules_source = "parsed" if materialize else f"({RULES_PARSE_SQL})"
    reader = con.sql(f"SELECT {RULES_SELECT} FROM {rules_source}").to_arrow_reader(RULE_CHUNK_ROWS)
    parts = [
        find_row_failures(pl.DataFrame(pl.from_arrow(batch)), max_duration_seconds)
        for batch in reader
        if batch.num_rows
    ]
    failures = pl.concat(parts) if parts else _NO_FAILURES.clear()
    con.register("row_failures", failures.to_arrow())
    return failures


def validation_result(rows_read: int, failures: pl.DataFrame) -> ValidationResult:
    """The counts of a batch of ``rows_read`` rows with these failures."""
    reason_counts = dict(failures.explode("reasons").group_by("reasons").len().iter_rows())
    rejected = failures.height
    return ValidationResult(
        rows_read=rows_read,
        rows_accepted=rows_read - rejected,
        rows_rejected=rejected,
        reason_counts={str(k): int(v) for k, v in reason_counts.items()},
    )


def validate_batch(
    con: duckdb.DuckDBPyConnection,
    raw: pa.Table,
    number_facts: pa.Table,
    *,
    batch_id: str,
    source_timezone: str,
    max_duration_seconds: int,
) -> ValidationResult:
    """Split ``raw`` into the temp tables ``validated_rows`` and ``rejected_rows`` of ``con``."""
    indexed = raw.append_column("row_idx", pa.array(range(raw.num_rows), pa.int64()))
    con.register("raw_batch", indexed)
    con.register("number_facts", number_facts)
    failures = check_rows(
        con,
        source_timezone=source_timezone,
        max_duration_seconds=max_duration_seconds,
    )
    con.execute("SET TimeZone = 'UTC'")
    for table, query in (("validated_rows", ACCEPTED_SQL), ("rejected_rows", REJECTED_SQL)):
        con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS {query}", {"batch_id": batch_id})
    return validation_result(raw.num_rows, failures)


__all__ = [
    "FLAGS",
    "ValidationResult",
    "check_rows",
    "find_row_failures",
    "validate_batch",
    "validation_result",
]
