"""Enrichment: geography, number type, carrier and time zone of both numbers of each call.

Every fact comes from the number-facts cache (phonenumbers, once per distinct number) and is
joined to the calls in SQL by E.164 number; country names come from ISO 3166 (pycountry).
A batch's enriched layer is the facts of the numbers it uses, one row per number
(:func:`batch_facts`); they are joined to the calls where the calls are written
(:func:`open_facts`, :data:`ENRICHMENT_SELECT`, :func:`enrichment_joins`), so the wide rows
are written once, into ``cdrs``, not once more as a layer of their own.
A caller with exactly one time zone gets ``caller_timezone`` and ``local_start_time`` (the
wall-clock start in that zone, with its daylight-saving rules); a caller whose number spans
several zones (a whole-country mobile range) gets the list in ``caller_timezones`` and
neither of the other two, since any one zone would be a guess.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pycountry

ENRICHMENT_COLUMNS = (
    "called_country_name",
    "called_number_type",
    "called_region",
    "called_carrier",
    "caller_number_type",
    "caller_region",
    "caller_carrier",
    "caller_timezones",
    "caller_timezone",
    "local_start_time",
)


def country_names() -> pa.Table:
    """ISO 3166-1 alpha-2 code -> English short name (the common name where ISO has one)."""
    codes, names = [], []
    for country in pycountry.countries:
        codes.append(country.alpha_2)
        names.append(getattr(country, "common_name", None) or country.name)
    return pa.table({"code": codes, "name": names})


# The facts of the numbers the calls use, one row per E.164 number, from a facts source
# (the cache's Parquet files or an Arrow table of NUMBER_FACTS_SCHEMA): a number decided
# from several written forms has one set of facts.
FACTS_FOUND_SQL = """
CREATE OR REPLACE TEMP TABLE enrich_batch_facts AS
WITH wanted AS (
    SELECT DISTINCT n FROM (
        SELECT called_number AS n FROM calls UNION ALL SELECT caller_number FROM calls
    ) WHERE n IS NOT NULL
)
SELECT f.e164,
    any_value(f.number_type) AS number_type,
    any_value(f.description) AS description,
    any_value(f.carrier_name) AS carrier_name,
    any_value(f.timezones) AS timezones
FROM {source} AS f
SEMI JOIN wanted ON f.e164 = wanted.n
GROUP BY f.e164
"""

# Each text column of the facts as an ENUM of the values the batch uses. The values are the
# same strings (an ENUM is written to Parquet as a plain string column); what changes is the
# cost: DuckDB writes an ENUM column's dictionary as it is instead of hashing every row's
# string: a quarter less time for the enriched write at 10M rows (benchmarks/README.md).
ENUM_TYPES_SQL = """
CREATE OR REPLACE TEMP TYPE enrich_number_type AS ENUM (
    SELECT DISTINCT number_type FROM enrich_facts_found WHERE number_type IS NOT NULL ORDER BY 1);
CREATE OR REPLACE TEMP TYPE enrich_description AS ENUM (
    SELECT DISTINCT description FROM enrich_facts_found WHERE description IS NOT NULL ORDER BY 1);
CREATE OR REPLACE TEMP TYPE enrich_carrier AS ENUM (
    SELECT DISTINCT carrier_name FROM enrich_facts_found WHERE carrier_name IS NOT NULL
    ORDER BY 1);
CREATE OR REPLACE TEMP TYPE enrich_zone AS ENUM (
    SELECT DISTINCT z FROM (SELECT unnest(timezones) AS z FROM enrich_facts_found)
    WHERE z IS NOT NULL ORDER BY 1);
CREATE OR REPLACE TEMP TYPE enrich_country_name AS ENUM (
    SELECT DISTINCT name FROM enrich_country_names_given WHERE name IS NOT NULL ORDER BY 1);
CREATE OR REPLACE TEMP TABLE enrich_country_names AS
    SELECT code, name::enrich_country_name AS name FROM enrich_country_names_given;
CREATE OR REPLACE TEMP TABLE enrich_facts AS
    SELECT e164,
        number_type::enrich_number_type AS number_type,
        description::enrich_description AS description,
        carrier_name::enrich_carrier AS carrier_name,
        timezones::enrich_zone[] AS timezones,
        CASE WHEN len(timezones) = 1 THEN timezones[1] END::enrich_zone AS timezone
    FROM enrich_facts_found;
DROP TABLE enrich_facts_found;
"""

# The enrichment columns of a call ``c`` joined by :func:`enrichment_joins`.
ENRICHMENT_SELECT = """
    n.name AS called_country_name,
    fc.number_type AS called_number_type,
    fc.description AS called_region,
    fc.carrier_name AS called_carrier,
    fr.number_type AS caller_number_type,
    fr.description AS caller_region,
    fr.carrier_name AS caller_carrier,
    coalesce(fr.timezones, []) AS caller_timezones,
    fr.timezone AS caller_timezone,
    timezone(fr.timezone::VARCHAR, c.start_time) AS local_start_time"""


def enrichment_joins(calls: str = "c") -> str:
    """The joins :data:`ENRICHMENT_SELECT` reads, for calls aliased ``calls``: the called
    number's facts, the caller's (:func:`open_callers`) and the called country's name."""
    return f"""
LEFT JOIN enrich_facts AS fc ON fc.e164 = {calls}.called_number
LEFT JOIN enrich_callers AS fr ON fr.caller_number = {calls}.caller_number
LEFT JOIN enrich_country_names AS n ON n.code = {calls}.called_country"""


def batch_facts(
    con: duckdb.DuckDBPyConnection, calls: str, number_facts: pa.Table | str
) -> duckdb.DuckDBPyRelation:
    """The facts of every number ``calls`` (a table or view in ``con``) use: one row per
    E.164 number with ``number_type``, ``description``, ``carrier_name``, ``timezones``.

    ``number_facts``: an Arrow table of ``numbers.NUMBER_FACTS_SCHEMA``, or a FROM-clause
    source with its columns (the cache's ``read_parquet``).
    """
    if isinstance(number_facts, pa.Table):
        con.register("enrich_facts_given", number_facts)
        number_facts = "enrich_facts_given"
    con.execute(f"CREATE OR REPLACE TEMP VIEW calls AS SELECT * FROM {calls}")
    con.execute(FACTS_FOUND_SQL.format(source=number_facts))
    return con.sql("SELECT * FROM enrich_batch_facts")


# The facts of a batch enriched before the enriched layer was per number (its wide rows, as
# ``cdrs`` holds them): the same facts wherever ``cdrs`` reads them (a called number's time
# zones are never read).
WIDE_LAYER_FACTS_SQL = """
SELECT e164, any_value(number_type) AS number_type, any_value(description) AS description,
    any_value(carrier_name) AS carrier_name, any_value(timezones) AS timezones
FROM (
    SELECT called_number AS e164, called_number_type AS number_type,
        called_region AS description, called_carrier AS carrier_name,
        NULL::VARCHAR[] AS timezones
    FROM {source}
    UNION ALL
    SELECT caller_number, caller_number_type, caller_region, caller_carrier, caller_timezones
    FROM {source}
)
WHERE e164 IS NOT NULL
GROUP BY e164
"""


def open_facts(con: duckdb.DuckDBPyConnection, facts: str) -> None:
    """Tables ``enrich_facts`` and ``enrich_country_names`` that :func:`enrichment_joins`
    reads, from ``facts`` (a FROM-clause source of :func:`batch_facts`' columns). Their text
    columns are ENUMs (strings to Arrow and Parquet)."""
    con.register("enrich_country_names_given", country_names())
    con.execute(f"CREATE OR REPLACE TEMP TABLE enrich_facts_found AS SELECT * FROM {facts}")
    con.execute(ENUM_TYPES_SQL)


def open_callers(con: duckdb.DuckDBPyConnection, callers: str) -> None:
    """Table ``enrich_callers`` that :func:`enrichment_joins` reads: each row of ``callers``
    (a FROM-clause source with a unique ``caller_number`` and any columns to carry along,
    such as its hash) with the facts of that number from ``enrich_facts``.

    The calls join a table of their callers, not of all the batch's numbers: on a 10M-row
    day with 200,000 callers among 2.2M numbers, the ``cdrs`` write took 13.5-14.0 s
    instead of 15.1-15.8 s.
    """
    con.execute(
        "CREATE OR REPLACE TEMP TABLE enrich_callers AS SELECT k.*, f.number_type, "
        "f.description, f.carrier_name, f.timezones, f.timezone "
        f"FROM {callers} AS k LEFT JOIN enrich_facts AS f ON f.e164 = k.caller_number"
    )


def enrich_calls(
    con: duckdb.DuckDBPyConnection, calls: str, number_facts: pa.Table | str
) -> duckdb.DuckDBPyRelation:
    """``calls`` (a table or view in ``con``) with :data:`ENRICHMENT_COLUMNS` added: what
    ``cdrs`` holds of a batch's calls and their enriched layer (:func:`batch_facts`)."""
    batch_facts(con, calls, number_facts)
    open_facts(con, "enrich_batch_facts")
    return join_facts(con, "calls")


def join_facts(con: duckdb.DuckDBPyConnection, calls: str) -> duckdb.DuckDBPyRelation:
    """``calls`` with :data:`ENRICHMENT_COLUMNS` joined from the tables of :func:`open_facts`
    (its callers' facts opened here)."""
    open_callers(
        con, f"(SELECT DISTINCT caller_number FROM {calls} WHERE caller_number IS NOT NULL)"
    )
    return con.sql(f"SELECT c.*, {ENRICHMENT_SELECT} FROM {calls} AS c {enrichment_joins('c')}")
