"""First landing wins: DEDUP_SQL against the rule written out plainly in Python.

DEDUP_SQL ranks only contested call ids (given twice in the batch, or kept by an earlier
batch); these tests check that this gives, row for row, what the contract's rule gives when
every row is looked at in landing order. The fingerprint of a stored call
(``fingerprint_sql``) is checked against the canonical fields as validation parsed them.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from cdr_assets.lib import dedup
from cdr_assets_tests.lib.test_validation import accepted_row

BATCH_SEQ = 5


def _reference(
    earlier: list[dict[str, Any]], batch: list[dict[str, Any]]
) -> tuple[set[int], list[tuple[Any, ...]]]:
    """Kept row ids and duplicate rows, one row at a time in landing order."""
    firsts: dict[str, dict[str, Any]] = {}
    for row in sorted(earlier, key=lambda r: (r["batch_seq"], r["source_file"], r["source_row"])):
        firsts.setdefault(row["call_id"], row)
    kept: set[int] = set()
    duplicates = []
    for row in sorted(batch, key=lambda r: (r["source_file"], r["source_row"])):
        first = firsts.get(row["call_id"])
        if first is None:
            firsts[row["call_id"]] = row
            kept.add(row["row_id"])
            continue
        duplicates.append(
            (
                row["call_id"],
                row["source_file"],
                row["source_row"],
                first["source_file"],
                first["source_row"],
                row["fingerprint"] == first["fingerprint"],
            )
        )
    return kept, duplicates


def _run_sql(
    earlier: list[dict[str, Any]], batch: list[dict[str, Any]]
) -> tuple[set[int], list[tuple[Any, ...]]]:
    with duckdb.connect() as con:
        con.register("batch_rows_given", pa.Table.from_pylist(batch))
        con.execute(
            "CREATE TEMP TABLE batch_rows AS SELECT * EXCLUDE (fingerprint) FROM batch_rows_given"
        )
        if earlier:
            con.register("earlier_given", pa.Table.from_pylist(earlier))
            con.execute(
                "CREATE TEMP VIEW earlier_kept AS SELECT call_id, source_file, source_row, "
                "fingerprint, batch_seq FROM earlier_given"
            )
        else:
            con.execute(dedup.EARLIER_KEPT_EMPTY_SQL)
        con.execute(dedup.CONTESTED_SQL)
        # As the pipeline gives them: only the contested rows' fingerprints.
        con.execute(
            "CREATE TEMP VIEW row_fingerprints AS SELECT row_id, fingerprint "
            "FROM batch_rows_given WHERE call_id IN (SELECT call_id FROM contested_ids)"
        )
        con.execute(dedup.DEDUP_SQL)
        kept = {row_id for (row_id,) in con.execute("SELECT row_id FROM kept_rows").fetchall()}
        duplicates = con.execute(
            "SELECT call_id, source_file, source_row, first_source_file, first_source_row, "
            "identical FROM duplicate_rows ORDER BY source_file, source_row"
        ).fetchall()
    return kept, duplicates


def _random_case(seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rng = random.Random(seed)
    ids = [f"call-{i}" for i in range(rng.randint(1, 40))]
    fingerprints = ["a", "b"]
    earlier = []
    for call_id in rng.sample(ids, rng.randint(0, len(ids))):
        earlier.append(
            {
                "call_id": call_id,
                "source_file": f"old-{rng.randint(0, 3)}.csv",
                "source_row": rng.randint(1, 100),
                "fingerprint": rng.choice(fingerprints),
                "batch_seq": rng.randint(1, BATCH_SEQ - 1),
            }
        )
    batch = []
    for row_id in range(rng.randint(1, 80)):
        batch.append(
            {
                "row_id": row_id,
                "call_id": rng.choice(ids),
                "source_file": f"new-{rng.randint(0, 3)}.csv",
                "source_row": row_id + 1,
                "fingerprint": rng.choice(fingerprints),
                "call_date": None,
                "batch_id": "b",
                "batch_seq": BATCH_SEQ,
            }
        )
    return earlier, batch


@pytest.mark.parametrize("seed", range(60))
def test_the_first_occurrence_in_landing_order_is_kept_and_every_later_one_is_a_duplicate(
    seed: int,
) -> None:
    earlier, batch = _random_case(seed)
    kept, duplicates = _run_sql(earlier, batch)
    expected_kept, expected_duplicates = _reference(earlier, batch)
    assert kept == expected_kept
    assert duplicates == expected_duplicates
    assert len(kept) + len(duplicates) == len(batch)  # every row is one or the other


def test_a_batch_of_unique_new_calls_ranks_nothing() -> None:
    batch = [
        {
            "row_id": i,
            "call_id": f"c{i}",
            "source_file": "a.csv",
            "source_row": i + 1,
            "call_date": None,
            "batch_id": "b",
            "batch_seq": BATCH_SEQ,
        }
        for i in range(10)
    ]
    with duckdb.connect() as con:
        con.register("batch_rows", pa.Table.from_pylist(batch))
        con.execute(dedup.EARLIER_KEPT_EMPTY_SQL)
        con.execute(dedup.CONTESTED_SQL)
        con.execute(
            "CREATE TEMP VIEW row_fingerprints AS "
            "SELECT NULL::BIGINT AS row_id, NULL::VARCHAR AS fingerprint WHERE false"
        )
        con.execute(dedup.DEDUP_SQL)
        counts = con.execute(
            "SELECT (SELECT count(*) FROM ranked), (SELECT count(*) FROM kept_rows), "
            "(SELECT count(*) FROM duplicate_rows)"
        ).fetchone()
    assert counts == (0, 10, 0)


def _fingerprint(row: dict[str, Any]) -> str:
    """``fingerprint_sql`` of one accepted row as validation stored it."""
    with duckdb.connect() as con:
        con.register("given", pa.Table.from_pylist([row]))
        (value,) = con.execute(f"SELECT {dedup.fingerprint_sql('a')} FROM given AS a").fetchall()[0]
    return str(value)


def _as_parsed(*fields: str | None) -> str:
    """The MD5 of the canonical fields as parsed, unit-separated, absent ones empty."""
    return hashlib.md5("\x1f".join(f or "" for f in fields).encode()).hexdigest()


def test_the_fingerprint_is_of_the_fields_as_given_not_as_derived() -> None:
    base = accepted_row()
    start_us, end_us = 1_795_168_800_000_000, 1_795_169_130_000_000  # 10:00:00, 10:05:30 Z
    expected = _as_parsed(
        "c1", "+12025550123", "+442079460958", str(start_us), str(end_us), "330",
        "carrier_001", "international", "GB", "ANSWERED",
    )  # fmt: skip
    assert _fingerprint(base) == expected
    without_end = accepted_row(end_time=None)
    assert without_end["end_time"] == base["end_time"]  # derived: the same instant
    assert _fingerprint(without_end) == _as_parsed(
        "c1", "+12025550123", "+442079460958", str(start_us), "", "330",
        "carrier_001", "international", "GB", "ANSWERED",
    )  # fmt: skip
    without_codes = accepted_row(call_type=None, country_code=None, disposition=None)
    assert _fingerprint(without_codes) == _as_parsed(
        "c1", "+12025550123", "+442079460958", str(start_us), str(end_us), "330",
        "carrier_001", "", "", "",
    )  # fmt: skip
    without_duration = accepted_row(duration_seconds=None)
    assert without_duration["duration_seconds"] == 330
    assert _fingerprint(without_duration) != _fingerprint(base)


def test_copies_that_differ_only_in_how_they_were_written_have_one_fingerprint() -> None:
    base = accepted_row()
    same = accepted_row(called_number="0044 20 7946 0958", country_code="gb", call_type="LOCAL")
    assert _fingerprint(same) != _fingerprint(base)  # call_type differs: local, international
    same = accepted_row(called_number="0044 20 7946 0958", country_code="gb")
    assert _fingerprint(same) == _fingerprint(base)
