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


# $calls: a relation with called_number / caller_number (E.164 or as given) and start_time.
ENRICH_SQL = """
WITH facts AS (
    SELECT e164,
        any_value(number_type) AS number_type,
        any_value(description) AS description,
        any_value(carrier_name) AS carrier_name,
        any_value(timezones) AS timezones
    FROM number_facts
    WHERE e164 IS NOT NULL
    GROUP BY e164
)
SELECT c.*,
    n.name AS called_country_name,
    fc.number_type AS called_number_type,
    fc.description AS called_region,
    fc.carrier_name AS called_carrier,
    fr.number_type AS caller_number_type,
    fr.description AS caller_region,
    fr.carrier_name AS caller_carrier,
    coalesce(fr.timezones, []) AS caller_timezones,
    CASE WHEN len(fr.timezones) = 1 THEN fr.timezones[1] END AS caller_timezone,
    CASE WHEN len(fr.timezones) = 1 THEN timezone(fr.timezones[1], c.start_time) END
        AS local_start_time
FROM calls AS c
LEFT JOIN facts AS fc ON fc.e164 = c.called_number
LEFT JOIN facts AS fr ON fr.e164 = c.caller_number
LEFT JOIN country_names AS n ON n.code = c.called_country
"""


def enrich_calls(
    con: duckdb.DuckDBPyConnection, calls: str, number_facts: pa.Table
) -> duckdb.DuckDBPyRelation:
    """``calls`` (a table or view in ``con``) with :data:`ENRICHMENT_COLUMNS` added."""
    con.register("number_facts", number_facts)
    con.register("country_names", country_names())
    con.execute(f"CREATE OR REPLACE TEMP VIEW calls AS SELECT * FROM {calls}")
    return con.sql(ENRICH_SQL)
