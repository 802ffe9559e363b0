"""The batch steps, as plain functions the Dagster assets (and so the CLI) call.

A batch is the set of landing files one run takes. Each step reads what the step before it
wrote for the batch, writes its own Parquet file(s) for the batch atomically, and can be run
again with the same result: files already moved out of the landing folder are read from
where they were moved to.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from itertools import islice
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from cdr_assets.lib import dedup, enrichment, privacy, rating, readers
from cdr_assets.lib.landing import printable, unsafe_name_reason
from cdr_assets.lib.numbers import NUMBER_FACTS_SCHEMA, NumberFactsCache
from cdr_assets.lib.settings import Settings
from cdr_assets.lib.validation import (
    ACCEPTED_SQL,
    FACT_COLUMNS,
    REJECTED_SQL,
    ValidationResult,
    check_rows,
    validation_result,
)
from cdr_assets.lib.warehouse import (
    Warehouse,
    copy_to_parquet_atomic,
    layer_writer,
    remove_file,
    sql_file_list,
    step_connection,
    temporary_sibling,
    write_relation_atomic,
    write_rows_atomic,
    write_text_atomic,
)

# The layer whose rows deduplication keeps in ``cdrs``: the last row-level layer (the
# enriched layer is per number, joined to these rows as ``cdrs`` is written).
LAST_BATCH_LAYER = "rated"

RAW_SCHEMA = pa.schema(
    [("source_file", pa.string()), ("source_row", pa.int64())]
    + [(field, pa.string()) for field in readers.CANONICAL_FIELDS]
    + [("raw_record", pa.string()), ("malformed", pa.bool_())]
)

FILE_OUTCOME_SCHEMA = pa.schema(
    [
        ("source_file", pa.string()),
        ("status", pa.string()),
        ("rows_read", pa.int64()),
        ("error", pa.string()),
        ("size_bytes", pa.int64()),
        ("content_sha256", pa.string()),
        ("stored_path", pa.string()),
    ]
)


@dataclass(frozen=True)
class RawResult:
    batch_id: str
    files: int
    files_rejected: int
    rows_read: int
    left_to: dict[str, str] = field(default_factory=dict)  # listed files another batch took


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _locate(name: str, settings: Settings, warehouse: Warehouse, batch_id: str) -> Path | None:
    """Where a batch's file is now: already moved by an earlier attempt, or still landing.

    The batch's own archive comes first: a newer file of the same name may have landed since.
    """
    for folder in (
        warehouse.archive_dir(batch_id),
        warehouse.rejected_files_dir(batch_id),
        settings.landing_dir,
    ):
        path = folder / name
        if path.is_symlink() or path.exists():
            return path
    return None


def read_batch_files(
    settings: Settings, warehouse: Warehouse, batch_id: str, files: Sequence[str]
) -> RawResult:
    """Read every file of the batch into ``raw/<batch>.parquet`` and move the files aside.

    The batch's file list is recorded before anything is read or moved, so that a re-run
    after a crash finds every file, in the landing folder or where it was moved to. A listed
    file that another batch took is left to it (see ``Warehouse.register_batch``). Call
    under the writer lock.
    """
    manifest = warehouse.register_batch(batch_id, list(files), settings.landing_dir)
    raw_path = warehouse.batch_file("raw", batch_id)
    raw_path.parent.mkdir(parents=True, exist_ok=True)
    raw_tmp = temporary_sibling(raw_path)
    # Each file's rows are written as soon as it is read: memory holds one file, not the batch.
    raw = layer_writer(raw_tmp, RAW_SCHEMA)
    rows_read = 0
    try:
        outcomes, moves = _read_each_file(settings, warehouse, batch_id, manifest.files, raw)
        rows_read = sum(int(str(o["rows_read"])) for o in outcomes)
        raw.close()
        os.replace(raw_tmp, raw_path)
    finally:
        raw.close()
        raw_tmp.unlink(missing_ok=True)
    _write_arrow_atomic(
        pa.Table.from_pylist(outcomes, schema=FILE_OUTCOME_SCHEMA),
        warehouse.root / "raw" / f"{batch_id}.files.parquet",
    )
    for source, target, error in moves:
        _move_aside(source, target, error)
    return RawResult(
        batch_id=batch_id,
        files=len(outcomes),
        files_rejected=sum(1 for o in outcomes if o["status"] == "rejected"),
        rows_read=rows_read,
        left_to=manifest.left_to,
    )


def _read_each_file(
    settings: Settings,
    warehouse: Warehouse,
    batch_id: str,
    names: Sequence[str],
    raw: pq.ParquetWriter,
) -> tuple[list[dict[str, object]], list[tuple[Path, Path, str | None]]]:
    """Read each file into ``raw``; each file's outcome, and where it is to be moved."""
    outcomes: list[dict[str, object]] = []
    paths: list[Path | None] = []
    errors: list[str | None] = []  # why a file is refused before it is read
    for name in names:
        path = _locate(name, settings, warehouse, batch_id)
        outcome: dict[str, object] = {"source_file": name, "rows_read": 0}
        error = unsafe_name_reason(name)
        if path is None:
            error = "file disappeared from the landing folder before it was read"
        elif error is None and path.is_symlink():
            error = "symbolic link: refused, never followed"
        if error is None and path is not None:
            outcome["size_bytes"] = path.stat().st_size
            outcome["content_sha256"] = _sha256(path)
        outcomes.append(outcome)
        paths.append(path)
        errors.append(error)
    readable = [p for p, e in zip(paths, errors, strict=True) if p is not None and e is None]
    tables = _read_files(readable, settings.max_file_bytes, warehouse.state_dir / "spill")
    moves: list[tuple[Path, Path, str | None]] = []
    for name, path, outcome, error in zip(names, paths, outcomes, errors, strict=True):
        table = None
        if error is None and path is not None:
            table, error = next(tables)
        if table is not None:
            named = table.add_column(
                0, "source_file", pa.repeat(pa.scalar(name, pa.string()), table.num_rows)
            )
            raw.write_table(named.select(RAW_SCHEMA.names).cast(RAW_SCHEMA))
            outcome.update(status="processed", rows_read=table.num_rows)
            del named, table
            target = warehouse.archive_dir(batch_id) / name
        else:
            outcome.update(status="rejected", error=f"{printable(name)}: {error}")
            target = warehouse.rejected_files_dir(batch_id) / name
        outcome["stored_path"] = str(target.relative_to(warehouse.root))
        if path is not None:
            processed = outcome["status"] == "processed"
            moves.append((path, target, None if processed else str(outcome["error"])))
    return outcomes, moves


# A batch of landing files this large is read on every core, a file a process (the CSV
# reader works on one core; one 48 MB file of the 10M-row benchmark day takes 0.7-0.9 s).
PARALLEL_READ_BYTES = 64 << 20


def _read_files(
    paths: list[Path], limit: int, scratch: Path
) -> Iterator[tuple[pa.Table | None, str | None]]:
    """Each file's table, or the reason it was refused, in the order of ``paths``.

    A large batch is read by a pool of processes, at most one file ahead per process, so
    memory holds a few files, not the batch. A process hands its table over as an Arrow
    file in a folder ``<pid>.*`` of ``scratch`` (mapped, not copied through a pipe),
    removed once read; after a crash, the stale-temporaries sweep removes the folder.
    """
    workers = min(os.cpu_count() or 1, len(paths))
    if workers < 2 or sum(p.stat().st_size for p in paths) < PARALLEL_READ_BYTES:
        yield from (_read_file(path, limit) for path in paths)
        return
    scratch.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix=f"{os.getpid()}.", dir=scratch) as folder,
        ProcessPoolExecutor(max_workers=workers) as pool,
    ):
        jobs = ((p, limit, Path(folder) / f"{n}.arrow") for n, p in enumerate(paths))
        pending = deque(pool.submit(_read_file_to, *job) for job in islice(jobs, workers))
        while pending:
            handed, error = pending.popleft().result()
            following = next(jobs, None)
            if following is not None:
                pending.append(pool.submit(_read_file_to, *following))
            if handed is None:
                yield None, error
                continue
            source = pa.memory_map(str(handed))
            try:
                yield pa.ipc.open_file(source).read_all(), None
            finally:  # the caller is done with the table when it asks for the next one
                source.close()
                handed.unlink()


def _read_file(path: Path, limit: int) -> tuple[pa.Table | None, str | None]:
    try:
        table = readers.read_landing_file(path, max_uncompressed_bytes=limit, implied_records=True)
        return table, None
    except readers.FileRejected as exc:
        return None, str(exc)


def _read_file_to(path: Path, limit: int, target: Path) -> tuple[Path | None, str | None]:
    """In a pool process: the file's table written to ``target`` (Arrow IPC), or why the
    file is refused."""
    table, error = _read_file(path, limit)
    if table is None:
        return None, error
    with pa.OSFile(str(target), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return target, None


def _move_aside(source: Path, target: Path, error: str | None) -> None:
    if source != target:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)  # renames a symbolic link itself, never its target
    if error is not None:
        write_text_atomic(target.with_name(target.name + ".error.txt"), error + "\n")


def _write_arrow_atomic(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)


@dataclass(frozen=True)
class ValidateResult(ValidationResult):
    batch_id: str


LANDED_FILES_SQL = """
SELECT
    o.source_file,
    o.status,
    o.rows_read,
    CASE WHEN o.status = 'processed' THEN o.rows_read - coalesce(r.n, 0) ELSE 0 END
        AS rows_accepted,
    coalesce(r.n, 0) AS rows_rejected,
    NULL::BIGINT AS rows_duplicate,
    o.error,
    o.size_bytes,
    o.content_sha256,
    NULL::VARCHAR AS replay_of,
    o.stored_path,
    $batch_id AS batch_id,
    NULL::BIGINT AS batch_seq,
    $landed_at::TIMESTAMPTZ AS landed_at
FROM file_outcomes AS o
LEFT JOIN refused_per_file AS r USING (source_file)
ORDER BY o.source_file
"""


# Distinct numbers of a batch whose facts are looked up (and the misses decided) at a time,
# by as many threads as there are cores.
FACTS_SLICE_NUMBERS = 500_000


def validate_batch_files(settings: Settings, warehouse: Warehouse, batch_id: str) -> ValidateResult:
    """raw/<batch> -> validated/<batch>, rejected_cdrs/<batch>, landed_files/<batch> (partial).

    The batch is validated in one DuckDB session that reads the raw file as it goes:

    1. the facts of every distinct number of the batch, from the number-facts cache, the
       misses decided and cached (``FACTS_SLICE_NUMBERS`` at a time);
    2. the rules checked on the parsed rows as DuckDB streams them (``check_rows`` with
       ``parsed`` a view): only the refused rows' indexes and reasons are kept;
    3. the accepted rows parsed again and streamed into ``validated/<batch>``, the refused
       rows taken from the raw file into ``rejected_cdrs/<batch>``.

    Nothing of the batch is held whole in memory. ``rows_duplicate``, ``replay_of`` and
    ``batch_seq`` of the landed files are filled by deduplication, which gives the batch its
    place in landing order.
    """
    raw_path = warehouse.batch_file("raw", batch_id)
    rows_read = pq.ParquetFile(raw_path).metadata.num_rows
    outcomes = pq.read_table(warehouse.root / "raw" / f"{batch_id}.files.parquet")
    cache = NumberFactsCache(warehouse.number_facts_dir, settings.default_region)
    rejected_path = warehouse.batch_file("rejected_cdrs", batch_id)
    with step_connection(warehouse, keep_order=False) as con:
        open_raw_batch(con, raw_path)
        con.register("number_facts", batch_number_facts(con, cache))
        failures = check_rows(
            con,
            source_timezone=settings.source_timezone,
            max_duration_seconds=settings.max_duration_seconds,
            materialize=False,
        )
        params = {"batch_id": batch_id}
        write_rows_atomic(
            con.sql(ACCEPTED_SQL, params=params), warehouse.batch_file("validated", batch_id)
        )
        write_rows_atomic(con.sql(REJECTED_SQL, params=params), rejected_path)
        refused_per_file = con.sql(
            "SELECT source_file, count(*) AS n "
            f"FROM read_parquet({sql_file_list([rejected_path])}) GROUP BY 1"
        ).to_arrow_table()
    totals = validation_result(rows_read, failures)
    with duckdb.connect() as con:
        con.register("file_outcomes", outcomes)
        con.register("refused_per_file", refused_per_file)
        landed = con.sql(
            LANDED_FILES_SQL,
            params={"batch_id": batch_id, "landed_at": datetime.now(UTC)},
        ).to_arrow_table()
    _write_arrow_atomic(landed, warehouse.batch_file("landed_files", batch_id))
    return ValidateResult(
        rows_read=totals.rows_read,
        rows_accepted=totals.rows_accepted,
        rows_rejected=totals.rows_rejected,
        reason_counts=totals.reason_counts,
        batch_id=batch_id,
    )


def open_raw_batch(con: duckdb.DuckDBPyConnection, raw_path: Path) -> None:
    """The view ``raw_batch`` validation reads: the raw file's rows, each with its position
    in the file as ``row_idx``."""
    con.execute(
        "CREATE OR REPLACE TEMP VIEW raw_batch AS SELECT * EXCLUDE (file_row_number), "
        f"file_row_number AS row_idx FROM read_parquet({sql_file_list([raw_path])}, "
        "file_row_number = true)"
    )


def batch_number_facts(con: duckdb.DuckDBPyConnection, cache: NumberFactsCache) -> pa.Table:
    """The facts validation reads of every distinct number string of ``raw_batch``, looked
    up and decided ``FACTS_SLICE_NUMBERS`` at a time, a slice a core
    (``NumberFactsCache.facts_for_slices``)."""
    numbers = con.sql(
        "SELECT called_number AS n FROM raw_batch WHERE called_number IS NOT NULL "
        "UNION SELECT caller_number FROM raw_batch WHERE caller_number IS NOT NULL"
    ).to_arrow_table()["n"]
    return cache.facts_for_slices(numbers, FACTS_SLICE_NUMBERS, FACT_COLUMNS)


@dataclass(frozen=True)
class RateResult:
    batch_id: str
    deck_version: str
    statuses: dict[str, int]


def rate_batch(settings: Settings, warehouse: Warehouse, batch_id: str) -> RateResult:
    """validated/<batch> -> rated/<batch>: every accepted row priced by the current decks.

    A deck that breaks the billing contract raises ``DeckError`` (naming file, line and
    rule): the batch stops here rather than price a call wrongly.
    """
    decks = rating.load_decks(settings.rates_dir, warehouse.rate_decks_dir)
    with step_connection(warehouse, keep_order=False) as con:
        con.execute(
            "CREATE TEMP VIEW batch_validated AS SELECT * FROM read_parquet("
            + sql_file_list([warehouse.batch_file("validated", batch_id)])
            + ")"
        )
        rated = rating.rate_calls(
            con, "batch_validated", decks, warehouse.rate_decks_dir / decks.version
        )
        write_rows_atomic(rated, warehouse.batch_file("rated", batch_id))
        statuses = con.execute(
            "SELECT rating_status, count(*) FROM read_parquet("
            + sql_file_list([warehouse.batch_file("rated", batch_id)])
            + ") GROUP BY 1 ORDER BY 1"
        ).fetchall()
    return RateResult(batch_id, decks.version, {str(k): int(n) for k, n in statuses})


@dataclass(frozen=True)
class EnrichResult:
    batch_id: str
    rows: int
    numbers: int  # distinct numbers of the batch with facts (the valid and possible ones)


def enrich_batch(settings: Settings, warehouse: Warehouse, batch_id: str) -> EnrichResult:
    """rated/<batch> -> enriched/<batch>: the facts of every number the batch's calls use.

    Validation decided every number string of the batch into the number-facts cache: the
    facts are read from the cache's files by DuckDB (the numbers the batch uses, by E.164
    form), and nothing is parsed again here. One row per number: deduplication joins them to
    the calls as it writes ``cdrs`` (``enrichment.open_facts``).
    """
    rated_path = warehouse.batch_file("rated", batch_id)
    cache = NumberFactsCache(warehouse.number_facts_dir, settings.default_region)
    with step_connection(warehouse, keep_order=False) as con:
        con.execute(
            "CREATE TEMP VIEW batch_rated AS SELECT caller_number, called_number FROM "
            f"read_parquet({sql_file_list([rated_path])})"
        )
        source = cache.source_sql()
        facts = enrichment.batch_facts(
            con, "batch_rated", NUMBER_FACTS_SCHEMA.empty_table() if source is None else source
        )
        write_relation_atomic(facts, warehouse.batch_file("enriched", batch_id))
        count = con.execute(
            "SELECT (SELECT count(*) FROM batch_rated), (SELECT count(*) FROM enrich_batch_facts)"
        ).fetchone()
    assert count is not None
    return EnrichResult(batch_id, int(count[0]), int(count[1]))


@dataclass(frozen=True)
class DedupResult:
    batch_id: str
    rows_kept: int
    rows_duplicate: int
    days: dict[str, int]  # call_date -> rows this batch kept for that day
    days_dropped: tuple[str, ...] = ()  # days an earlier run of the batch wrote, not this one

    @property
    def days_changed(self) -> list[str]:
        return sorted({*self.days, *self.days_dropped})


def _earlier_kept_files(warehouse: Warehouse, batch_seq: int) -> list[Path]:
    seqs = warehouse.batch_seqs()
    return [
        path for path in warehouse.table_files("cdrs") if seqs.get(path.stem, batch_seq) < batch_seq
    ]


def _open_dedup(
    con: duckdb.DuckDBPyConnection, warehouse: Warehouse, batch_id: str, batch_seq: int
) -> None:
    """Decide which rows of the batch are kept, on narrow keys; ``KEPT_DAY_SQL`` writes them.

    Only the dedup keys are materialised (``batch_rows``, one row id per row of the batch's
    last layer file) and only contested call ids are ranked (``dedup.DEDUP_SQL``); the wide
    rows are read once, when a day is written.
    """
    path = sql_file_list([warehouse.batch_file(LAST_BATCH_LAYER, batch_id)])
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW batch_file AS SELECT * FROM read_parquet({path}, "
        "file_row_number = true)"
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE batch_rows AS SELECT file_row_number AS row_id, call_id, "
        "source_file, source_row, call_date, batch_id, "
        "$batch_seq::BIGINT AS batch_seq FROM batch_file",
        {"batch_seq": batch_seq},
    )
    earlier = _earlier_kept_files(warehouse, batch_seq)
    if earlier:
        con.execute(
            "CREATE OR REPLACE TEMP VIEW earlier_kept AS SELECT e.call_id, e.source_file, "
            f"e.source_row, {dedup.fingerprint_sql('e')} AS fingerprint, e.batch_seq "
            f"FROM read_parquet({sql_file_list(earlier)}, union_by_name = true) AS e"
        )
    else:
        con.execute(dedup.EARLIER_KEPT_EMPTY_SQL)
    con.execute(dedup.CONTESTED_SQL)
    # Fingerprints only of the rows whose call id is contested (the filter comes first).
    con.execute(
        "CREATE OR REPLACE TEMP VIEW row_fingerprints AS SELECT c.file_row_number AS row_id, "
        f"{dedup.fingerprint_sql('c')} AS fingerprint FROM batch_file AS c "
        "WHERE c.call_id IN (SELECT call_id FROM contested_ids)"
    )
    con.execute(dedup.DEDUP_SQL)
    _register_caller_hashes(con, warehouse)
    enriched = warehouse.batch_file("enriched", batch_id)
    facts = f"read_parquet({sql_file_list([enriched])})"
    if "e164" not in pq.read_schema(enriched).names:  # enriched by an earlier release
        facts = f"({enrichment.WIDE_LAYER_FACTS_SQL.format(source=facts)})"
    enrichment.open_facts(con, facts)
    enrichment.open_callers(con, "caller_keys")


def _register_caller_hashes(con: duckdb.DuckDBPyConnection, warehouse: Warehouse) -> None:
    """``caller_keys``: each caller number of the batch with its keyed hash (one per number)."""
    rows = con.execute(
        "SELECT list(DISTINCT caller_number) FROM batch_file WHERE caller_number IS NOT NULL"
    ).fetchall()
    numbers = pa.array((rows[0][0] if rows else None) or [], pa.string())
    con.register("caller_keys", privacy.caller_hashes(numbers, privacy.caller_key(warehouse)))


# The kept rows of one day: the batch's rated rows with their enrichment (the facts of
# both numbers), the batch's landing sequence and the caller's hash (carried by
# ``enrich_callers``). The rows are in no particular order (landing order is ``batch_seq``,
# ``source_file``, ``source_row``): sorting the wide rows cost more than the rest of
# deduplication together (230 of 300 s for a 10M-row day).
KEPT_DAY_SQL = f"""
SELECT c.* EXCLUDE (file_row_number), {enrichment.ENRICHMENT_SELECT},
    $batch_seq::BIGINT AS batch_seq, fr.caller_hash
FROM batch_file AS c
ANTI JOIN dropped_rows AS d ON d.row_id = c.file_row_number
{enrichment.enrichment_joins("c")}
WHERE c.call_date = CAST($day AS DATE)
"""


def deduplicate_batch(warehouse: Warehouse, batch_id: str) -> DedupResult:
    """rated/<batch> + enriched/<batch> -> cdrs/call_date=*/<batch>, duplicate_cdrs/<batch>;
    fills counts.

    Call under the warehouse writer lock: it gives the batch its landing sequence.
    """
    batch_seq = warehouse.assign_seq(batch_id)
    with step_connection(warehouse, keep_order=False) as con:
        _open_dedup(con, warehouse, batch_id, batch_seq)
        day_rows = con.execute(
            "SELECT CAST(call_date AS VARCHAR), count(*) FROM kept_rows GROUP BY 1 ORDER BY 1"
        ).fetchall()
        days = {str(day): int(n) for day, n in day_rows}
        for day in days:
            write_rows_atomic(
                con.sql(KEPT_DAY_SQL, params={"day": day, "batch_seq": batch_seq}),
                warehouse.cdrs_file(day, batch_id),
            )
        # A re-run must not leave a day this batch no longer touches.
        dropped = []
        for stale in warehouse.cdrs_dir.glob(f"call_date=*/{batch_id}.parquet"):
            if stale.parent.name.removeprefix("call_date=") not in days:
                dropped.append(stale.parent.name.removeprefix("call_date="))
                remove_file(stale)
        copy_to_parquet_atomic(
            con,
            "SELECT * FROM duplicate_rows ORDER BY source_file, source_row",
            warehouse.batch_file("duplicate_cdrs", batch_id),
        )
        _finish_landed_files(con, warehouse, batch_id, batch_seq)
        counts = con.execute(
            "SELECT (SELECT count(*) FROM kept_rows), (SELECT count(*) FROM duplicate_rows)"
        ).fetchone()
    assert counts is not None
    return DedupResult(batch_id, int(counts[0]), int(counts[1]), days, tuple(sorted(dropped)))


def _finish_landed_files(
    con: duckdb.DuckDBPyConnection, warehouse: Warehouse, batch_id: str, batch_seq: int
) -> None:
    """Add each file's duplicate count, and name the earlier file whose bytes it repeats."""
    seqs = warehouse.batch_seqs()
    earlier = [
        p for p in warehouse.table_files("landed_files") if seqs.get(p.stem, batch_seq) < batch_seq
    ]
    con.execute(
        "CREATE OR REPLACE TEMP VIEW earlier_landed AS "
        + (
            "SELECT source_file, content_sha256, batch_seq FROM read_parquet("
            + sql_file_list(earlier)
            + ", union_by_name = true)"
            if earlier
            else "SELECT NULL::VARCHAR AS source_file, NULL::VARCHAR AS content_sha256, "
            "NULL::BIGINT AS batch_seq WHERE false"
        )
    )
    path = warehouse.batch_file("landed_files", batch_id)
    landed = con.sql(
        f"""
        WITH this AS (SELECT * FROM read_parquet({sql_file_list([path])})),
        candidates AS (
            SELECT source_file AS earlier_file, content_sha256, batch_seq AS seq
            FROM earlier_landed
            UNION ALL
            SELECT source_file, content_sha256, $batch_seq FROM this
        )
        SELECT t.* REPLACE (
            $batch_seq::BIGINT AS batch_seq,
            CASE WHEN t.status = 'processed' THEN coalesce(d.n, 0) END AS rows_duplicate,
            (SELECT arg_min(c.earlier_file, (c.seq, c.earlier_file)) FROM candidates AS c
             WHERE c.content_sha256 = t.content_sha256
               AND (c.seq, c.earlier_file) < ($batch_seq, t.source_file)) AS replay_of
        )
        FROM this AS t
        LEFT JOIN (SELECT source_file, count(*) AS n FROM duplicate_rows GROUP BY 1) AS d
            USING (source_file)
        ORDER BY t.source_file
        """,
        params={"batch_seq": batch_seq},
    ).to_arrow_table()
    _write_arrow_atomic(landed, path)


def rebuild_cdrs_day(warehouse: Warehouse, call_date: str) -> int:
    """Rewrite one day of ``cdrs`` from the batches' last layer, in landing order.

    Each batch that has rows for the day is deduplicated again against the batches before
    it, which is what the batch runs did: the files come out the same.
    """
    date.fromisoformat(call_date)  # a partition key from the UI: refuse anything but a date
    seqs = warehouse.batch_seqs()
    touching = []
    for path in warehouse.table_files(LAST_BATCH_LAYER):
        with duckdb.connect() as con:
            row = con.execute(
                f"SELECT count(*) FROM read_parquet({sql_file_list([path])}) "
                "WHERE call_date = CAST($day AS DATE)",
                {"day": call_date},
            ).fetchone()
        if row and row[0] and path.stem in seqs:  # not yet deduplicated: nothing kept yet
            touching.append(path.stem)
    total = 0
    for batch_id in sorted(touching, key=lambda b: seqs[b]):
        with step_connection(warehouse, keep_order=False) as con:
            _open_dedup(con, warehouse, batch_id, seqs[batch_id])
            # fetchall: the result is finished before the connection streams the day's rows.
            (count_row,) = con.execute(
                "SELECT count(*) FROM kept_rows WHERE call_date = CAST($day AS DATE)",
                {"day": call_date},
            ).fetchall()
            n = int(count_row[0])
            target = warehouse.cdrs_file(call_date, batch_id)
            if n:
                write_rows_atomic(
                    con.sql(KEPT_DAY_SQL, params={"day": call_date, "batch_seq": seqs[batch_id]}),
                    target,
                )
            else:
                remove_file(target)
            total += n
    return total


__all__ = [
    "DedupResult",
    "EnrichResult",
    "RateResult",
    "RawResult",
    "ValidateResult",
    "deduplicate_batch",
    "enrich_batch",
    "rate_batch",
    "read_batch_files",
    "rebuild_cdrs_day",
    "validate_batch_files",
]
