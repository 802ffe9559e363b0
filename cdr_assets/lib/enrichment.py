"""Enrichment: geography, number type, carrier and time zone of both numbers of each call.

Every fact comes from the number-facts cache (phonenumbers, once per distinct number) and is
joined to the calls in SQL by E.164 number; country names come from ISO 3166 (pycountry).
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
CREATE OR REPLACE TEMP TABLE enrich_facts_found AS
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

# $calls: a relation with called_number / caller_number (E.164 or as given) and start_time.
ENRICH_SQL = """
SELECT c.*,
    n.name AS called_country_name,
    fc.number_type AS called_number_type,
    fc.description AS called_region,
    fc.carrier_name AS called_carrier,
    fr.number_type AS caller_number_type,
    fr.description AS caller_region,
    fr.carrier_name AS caller_carrier,
    coalesce(fr.timezones, []) AS caller_timezones,
    fr.timezone AS caller_timezone,
    timezone(fr.timezone::VARCHAR, c.start_time) AS local_start_time
FROM calls AS c
LEFT JOIN enrich_facts AS fc ON fc.e164 = c.called_number
LEFT JOIN enrich_facts AS fr ON fr.e164 = c.caller_number
LEFT JOIN enrich_country_names AS n ON n.code = c.called_country
"""


def enrich_calls(
    con: duckdb.DuckDBPyConnection, calls: str, number_facts: pa.Table | str
) -> duckdb.DuckDBPyRelation:
    """``calls`` (a table or view in ``con``) with :data:`ENRICHMENT_COLUMNS` added.

    ``number_facts``: an Arrow table of ``numbers.NUMBER_FACTS_SCHEMA``, or a FROM-clause
    source with its columns (the cache's ``read_parquet``); only the facts of numbers the
    calls use are taken from it, into a temp table of ``con``. The text columns of the
    result are ENUMs (strings to Arrow and Parquet).
    """
    if isinstance(number_facts, pa.Table):
        con.register("enrich_facts_given", number_facts)
        number_facts = "enrich_facts_given"
    con.register("enrich_country_names_given", country_names())
    con.execute(f"CREATE OR REPLACE TEMP VIEW calls AS SELECT * FROM {calls}")
    con.execute(FACTS_FOUND_SQL.format(source=number_facts))
    con.execute(ENUM_TYPES_SQL)
    return con.sql(ENRICH_SQL)
