"""First landing wins: which accepted rows of a batch are new calls, which are duplicates.

A batch's accepted rows are compared with the calls kept by every batch that reached the
warehouse before it (lower landing sequence) and with each other in landing order (file
name, then row). Comparing only with *earlier* batches makes a re-run of any batch give the
same answer however many batches came after it.
"""

from __future__ import annotations


def _as_given(alias: str, field: str, text: str) -> str:
    """A field's text as the file gave it: empty when validation derived it."""
    return f"CASE WHEN list_contains({alias}.derived_fields, '{field}') THEN '' ELSE {text} END"


def fingerprint_sql(alias: str) -> str:
    """SQL for the MD5 (hex) of a stored call's canonical fields as parsed, before anything
    was derived (``derived_fields`` says which were): two copies of a call are identical when
    their fingerprints are equal. ``alias`` names a row of ``validated``, ``rated`` or
    ``cdrs``. Computed only for the rows of contested call ids, never stored."""
    a = alias
    return f"""md5(concat_ws(chr(31),
        {a}.call_id, coalesce({a}.caller_number, ''), {a}.called_number,
        CAST(epoch_us({a}.start_time) AS VARCHAR),
        {_as_given(a, "end_time", f"coalesce(CAST(epoch_us({a}.end_time) AS VARCHAR), '')")},
        {_as_given(a, "duration_seconds", f"coalesce(CAST({a}.duration_seconds AS VARCHAR), '')")},
        {a}.carrier_id,
        {_as_given(a, "call_type", f"coalesce({a}.call_type, '')")},
        {_as_given(a, "country_code", f"coalesce({a}.country_code, '')")},
        {_as_given(a, "disposition", f"coalesce({a}.disposition, '')")}
    ))"""


# $batch_rows: the batch's accepted rows (row_id, call_id, source_file, source_row,
# call_date, batch_id, batch_seq); $earlier_kept: the rows earlier batches kept (call_id,
# source_file, source_row, fingerprint, batch_seq).
#
# Only a *contested* call id (given more than once in the batch, or kept by an earlier batch)
# can make a duplicate, so only its rows are ranked: a batch of unique new calls costs one
# GROUP BY, not a sort of every row. The result is the same as ranking every row, since each
# call id is decided on its own rows.
CONTESTED_SQL = """
CREATE OR REPLACE TEMP TABLE contested_ids AS
SELECT call_id FROM batch_rows GROUP BY call_id HAVING count(*) > 1
UNION
SELECT call_id FROM earlier_kept WHERE call_id IN (SELECT call_id FROM batch_rows);
"""

# After CONTESTED_SQL, with $row_fingerprints: (row_id, fingerprint) of at least the batch's
# rows of contested call ids. ``dropped_rows`` holds the row ids that are not kept;
# ``kept_rows`` is every other row of the batch.
DEDUP_SQL = """

CREATE OR REPLACE TEMP TABLE ranked AS
SELECT b.*, f.fingerprint,
    row_number() OVER (PARTITION BY b.call_id ORDER BY b.source_file, b.source_row)
        AS occurrence
FROM batch_rows AS b
SEMI JOIN contested_ids AS c ON c.call_id = b.call_id
JOIN row_fingerprints AS f ON f.row_id = b.row_id;

CREATE OR REPLACE TEMP TABLE firsts AS
SELECT call_id,
    arg_min(source_file, batch_seq) AS first_source_file,
    arg_min(source_row, batch_seq) AS first_source_row,
    arg_min(fingerprint, batch_seq) AS first_fingerprint,
    min(batch_seq) AS first_batch_seq
FROM (
    SELECT call_id, source_file, source_row, fingerprint, batch_seq FROM earlier_kept
    WHERE call_id IN (SELECT call_id FROM ranked)
    UNION ALL
    SELECT call_id, source_file, source_row, fingerprint, batch_seq FROM ranked
    WHERE occurrence = 1
)
GROUP BY call_id;

CREATE OR REPLACE TEMP TABLE dropped_rows AS
SELECT r.row_id
FROM ranked AS r
JOIN firsts AS f USING (call_id)
WHERE NOT (r.occurrence = 1 AND f.first_batch_seq = r.batch_seq);

CREATE OR REPLACE TEMP TABLE duplicate_rows AS
SELECT
    r.call_id,
    r.source_file,
    r.source_row,
    f.first_source_file,
    f.first_source_row,
    r.fingerprint = f.first_fingerprint AS identical,
    r.call_date,
    r.batch_id
FROM ranked AS r
JOIN firsts AS f USING (call_id)
WHERE NOT (r.occurrence = 1 AND f.first_batch_seq = r.batch_seq)
ORDER BY r.source_file, r.source_row;

CREATE OR REPLACE TEMP VIEW kept_rows AS
SELECT b.* FROM batch_rows AS b ANTI JOIN dropped_rows AS d ON d.row_id = b.row_id;
"""

EARLIER_KEPT_EMPTY_SQL = """
CREATE OR REPLACE TEMP VIEW earlier_kept AS
SELECT NULL::VARCHAR AS call_id, NULL::VARCHAR AS source_file, NULL::BIGINT AS source_row,
    NULL::VARCHAR AS fingerprint, NULL::BIGINT AS batch_seq
WHERE false
"""
