"""The warehouse on disk: Parquet datasets as the system of record, and their safe writing.

Layout under ``CDR_WAREHOUSE_DIR``::

    _state/lock, _state/next_seq         the writer lock and the landing-order counter
    batches/<batch_id>.json              which files a batch took, and its landing order
    raw/<batch_id>.parquet               rows as read (strings)
    validated/<batch_id>.parquet         accepted rows, typed
    rated/<batch_id>.parquet             accepted rows with cost, revenue, margin, status
    enriched/<batch_id>.parquet          the facts of each number the batch uses, one row
                                         per number (joined to the rows in cdrs)
    rate_decks/<version>/                the decks that priced calls, kept to explain bills
                                         and read instead of deck files of the same content
    rejected_cdrs/<batch_id>.parquet     refused rows with their reasons
    landed_files/<batch_id>.parquet      one row per file of the batch
    duplicate_cdrs/<batch_id>.parquet    accepted rows set aside as duplicates
    cdrs/call_date=<day>/<batch_id>.parquet   the deduplicated calls a batch kept, per day
    number_facts/...                     the parsed-number cache
    _state/<cache>/<day>/                caches of what a day's cdrs give (DAY_CACHE_DIRS)
    landing_archive/<batch_id>/<file>    processed landing files
    landing_rejected/<batch_id>/<file>   unreadable landing files, with <file>.error.txt
    cdr.duckdb                           the read-only serving file for BI tools

Every file is written under a temporary name in its own folder and renamed into place, so a
reader sees the old file or the new one, never half of one; a crash leaves only temporary
files, which no reader globs (they do not end in ``.parquet``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

BATCH_TABLES = ("raw", "validated", "rejected_cdrs", "landed_files", "duplicate_cdrs")


class WarehouseBusy(RuntimeError):
    """Another process holds the warehouse writer lock."""


@dataclass(frozen=True)
class Warehouse:
    root: Path

    @property
    def state_dir(self) -> Path:
        return self.root / "_state"

    @property
    def rate_decks_dir(self) -> Path:
        """``rate_decks/``: a snapshot of each deck version (``rating.write_snapshot``)."""
        return self.root / "rate_decks"

    @property
    def serving_path(self) -> Path:
        return self.root / "cdr.duckdb"

    @property
    def cdrs_dir(self) -> Path:
        return self.root / "cdrs"

    @property
    def number_facts_dir(self) -> Path:
        return self.root / "number_facts"

    def batch_file(self, table: str, batch_id: str) -> Path:
        return self.root / table / f"{batch_id}.parquet"

    def cdrs_file(self, call_date: str, batch_id: str) -> Path:
        return self.cdrs_dir / f"call_date={call_date}" / f"{batch_id}.parquet"

    def manifest_path(self, batch_id: str) -> Path:
        return self.root / "batches" / f"{batch_id}.json"

    def archive_dir(self, batch_id: str) -> Path:
        return self.root / "landing_archive" / batch_id

    def rejected_files_dir(self, batch_id: str) -> Path:
        return self.root / "landing_rejected" / batch_id

    def table_files(self, table: str) -> list[Path]:
        """The published Parquet files of a table, in a stable order."""
        base = self.root / table
        pattern = "call_date=*/*.parquet" if table == "cdrs" else "*.parquet"
        return sorted(base.glob(pattern)) if base.exists() else []

    def table_files_for_day(self, call_date: str) -> list[Path]:
        folder = self.cdrs_dir / f"call_date={call_date}"
        return sorted(folder.glob("*.parquet")) if folder.exists() else []

    def cdrs_days(self) -> list[str]:
        if not self.cdrs_dir.exists():
            return []
        return sorted(
            p.name.removeprefix("call_date=")
            for p in self.cdrs_dir.glob("call_date=*")
            if any(p.glob("*.parquet"))
        )

    # -- batches -------------------------------------------------------------------------

    def read_manifest(self, batch_id: str) -> BatchManifest | None:
        path = self.manifest_path(batch_id)
        if not path.exists():
            return None
        return BatchManifest.from_json(json.loads(path.read_text(encoding="utf-8")))

    def manifests(self) -> list[BatchManifest]:
        """Every batch's manifest, in batch-id order."""
        folder = self.root / "batches"
        if not folder.exists():
            return []
        return [
            BatchManifest.from_json(json.loads(path.read_text(encoding="utf-8")))
            for path in sorted(folder.glob("*.json"))
        ]

    def register_batch(
        self, batch_id: str, files: list[str], landing_dir: Path | None = None
    ) -> BatchManifest:
        """Record which files a batch took, once; a re-run keeps the first record.

        Call under the writer lock. With ``landing_dir`` (the folder the names were listed
        in), a listed name that another batch took is left to it and recorded under
        ``left_to``: a name in the manifest of an unfinished batch, or a name no longer in the
        landing folder that another batch recorded (it read and moved the file). So two runs
        that listed the same files, or a run beside a sensor run, take each file once. A name
        in the landing folder that only finished batches recorded is a new file with an old
        name: taken.
        """
        existing = self.read_manifest(batch_id)
        if existing is not None:
            return existing
        if landing_dir is None:
            manifest = BatchManifest(batch_id=batch_id, seq=None, files=sorted(set(files)))
            self._write_manifest(manifest)
            return manifest
        unfinished: dict[str, str] = {}
        recorded: dict[str, str] = {}
        for other in self.manifests():
            for name in other.files:
                recorded.setdefault(name, other.batch_id)
                if not other.finished:
                    unfinished.setdefault(name, other.batch_id)
        taken, left_to = [], {}
        for name in sorted(set(files)):
            gone = not os.path.lexists(landing_dir / name)
            if name in unfinished:
                left_to[name] = unfinished[name]
            elif gone and name in recorded:
                left_to[name] = recorded[name]
            else:
                taken.append(name)
        manifest = BatchManifest(batch_id=batch_id, seq=None, files=taken, left_to=left_to)
        self._write_manifest(manifest)
        return manifest

    def assign_seq(self, batch_id: str) -> int:
        """The batch's place in landing order, given once (call under the writer lock).

        It is given when the batch is first deduplicated, so every batch with a lower number
        has already been deduplicated: first-come-first-kept holds even when runs are
        launched or retried out of order. A batch without files (every listed file was left to
        another batch) takes no place: 0, and the next batch gets the number it would have.
        """
        manifest = self.read_manifest(batch_id)
        if manifest is None:
            raise FileNotFoundError(f"batch {batch_id} was never read: materialise raw_cdrs")
        if manifest.seq is not None:
            return manifest.seq
        if not manifest.files:
            self._write_manifest(replace(manifest, seq=0))
            return 0
        counter = self.state_dir / "next_seq"
        seq = int(counter.read_text()) if counter.exists() else 1
        self._write_manifest(replace(manifest, seq=seq))
        write_text_atomic(counter, str(seq + 1))
        return seq

    def mark_deduplicated(self, batch_id: str) -> None:
        """The batch's calls, marts and alerts are written; the serving file is left to do.
        Call under the writer lock."""
        manifest = self.read_manifest(batch_id)
        if manifest is None or manifest.seq is None:
            raise FileNotFoundError(f"batch {batch_id} was never deduplicated")
        self._write_manifest(replace(manifest, state=DEDUPLICATED))

    def mark_published(self) -> list[str]:
        """Call after publishing the serving file, under the same writer lock: every
        deduplicated batch is in it, so finished. Returns those batches."""
        done = []
        for manifest in self.manifests():
            if manifest.state == DEDUPLICATED:
                self._write_manifest(replace(manifest, state=PUBLISHED))
                done.append(manifest.batch_id)
        return done

    def _write_manifest(self, manifest: BatchManifest) -> None:
        write_text_atomic(
            self.manifest_path(manifest.batch_id), json.dumps(manifest.to_json(), indent=1)
        )

    def unfinished_batches(self) -> list[str]:
        """Batches that a failed or killed run left before the serving file published them."""
        return [m.batch_id for m in self.manifests() if not m.finished]

    def batch_seqs(self) -> dict[str, int]:
        return {m.batch_id: m.seq for m in self.manifests() if m.seq is not None}


TAKEN, DEDUPLICATED, PUBLISHED = "taken", "deduplicated", "published"


@dataclass(frozen=True)
class BatchManifest:
    """``batches/<batch_id>.json``: the files a batch took, its landing order and its state.

    ``state`` goes taken -> deduplicated (calls, marts and alerts written) -> published (in
    the serving file). A manifest written before states were recorded has none: it counts
    as published once it has a ``seq``.
    """

    batch_id: str
    seq: int | None
    files: list[str]
    state: str = TAKEN
    left_to: dict[str, str] = field(default_factory=dict)  # listed names another batch took

    @property
    def finished(self) -> bool:
        return self.state == PUBLISHED

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BatchManifest:
        seq = data["seq"]
        return cls(
            batch_id=data["batch_id"],
            seq=seq,
            files=list(data["files"]),
            state=data.get("state", TAKEN if seq is None else PUBLISHED),
            left_to=dict(data.get("left_to", {})),
        )

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "batch_id": self.batch_id,
            "seq": self.seq,
            "state": self.state,
            "files": self.files,
        }
        if self.left_to:
            data["left_to"] = self.left_to
        return data


# DuckDB's memory budget per pipeline step (its own default is 80% of the machine): what
# does not fit spills to ``_state/spill/``, so a large batch is slower, not out of memory.
MEMORY_LIMIT_ENV = "CDR_DUCKDB_MEMORY_LIMIT"
DEFAULT_MEMORY_LIMIT = "1500MB"


@contextlib.contextmanager
def step_connection(
    warehouse: Warehouse, memory_limit: str | None = None, *, keep_order: bool = True
) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB for one step: ``memory_limit`` (default ``CDR_DUCKDB_MEMORY_LIMIT``,
    else 1500MB) and a spill folder of its own under ``_state/spill/``, removed afterwards.

    ``keep_order=False`` lets DuckDB return and write rows of a query without ORDER BY in any
    order (``preserve_insertion_order``): a wide Parquet write under the memory limit then
    runs on every core instead of one (10M enriched rows: 42 -> 21 s).
    """
    limit = memory_limit or os.environ.get(MEMORY_LIMIT_ENV) or DEFAULT_MEMORY_LIMIT
    spill = warehouse.state_dir / "spill" / f"{os.getpid()}.{time.monotonic_ns()}"
    spill.mkdir(parents=True, exist_ok=True)
    try:
        config: dict[str, str | bool | int | float | list[str]] = {
            "memory_limit": limit,
            "temp_directory": str(spill),
            "preserve_insertion_order": keep_order,
        }
        with duckdb.connect(config=config) as con:
            yield con
    finally:
        shutil.rmtree(spill, ignore_errors=True)


def temporary_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


# How DuckDB writes the warehouse's Parquet files. zstd at level 1 (DuckDB's default is 3,
# pyarrow's is 1): at 10M rows the enriched write is 20% faster and 2% larger.
PARQUET_COPY_OPTIONS = "FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1"


def copy_to_parquet_atomic(
    con: duckdb.DuckDBPyConnection,
    query: str,
    path: Path,
    params: dict[str, object] | None = None,
) -> None:
    """Write a query's result to ``path`` as Parquet, renamed into place when complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        con.execute(
            f"COPY ({query}) TO '{_sql_path(tmp)}' ({PARQUET_COPY_OPTIONS})",
            params or {},
        )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_relation_atomic(relation: duckdb.DuckDBPyRelation, path: Path) -> None:
    """Write a relation to ``path`` as Parquet, renamed into place when complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        relation.query(
            "relation_to_write",
            f"COPY relation_to_write TO '{_sql_path(tmp)}' ({PARQUET_COPY_OPTIONS})",
        )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# Columns of the row-level layers whose values are nearly all distinct. pyarrow's writer would
# build a dictionary for each of them in every row group and give it up; written plain, the
# validated layer costs a fifth less CPU (and is smaller).
DISTINCT_COLUMNS = frozenset(
    {
        "call_id",
        "caller_number",
        "called_number",
        "start_time",
        "end_time",
        "source_row",
        "raw_record",
        "caller_hash",
        "local_start_time",
    }
)


def layer_writer(path: Path, schema: pa.Schema, *, store_schema: bool = True) -> pq.ParquetWriter:
    """A pyarrow Parquet writer for a row-level layer: zstd, a dictionary for all but the
    DISTINCT_COLUMNS. ``store_schema=False`` leaves out the Arrow schema, so that the file
    reads back with the types a file DuckDB wrote has (no dictionary types)."""
    dictionary = [
        f"{field.name}.list.element" if pa.types.is_list(field.type) else field.name
        for field in schema
        if field.name not in DISTINCT_COLUMNS
    ]
    return pq.ParquetWriter(
        path, schema, compression="zstd", use_dictionary=dictionary, store_schema=store_schema
    )


# Rows in each Arrow batch of a streamed write (DuckDB's vector size times 60, its row group).
STREAM_BATCH_ROWS = 122_880


def write_rows_atomic(relation: duckdb.DuckDBPyRelation, path: Path) -> int:
    """Write a relation's rows to ``path`` as Parquet through :func:`layer_writer`, renamed
    into place when complete; returns the number of rows.

    DuckDB computes the rows as a stream of Arrow batches while a thread of its own encodes
    the batch before. For the wide row-level layers this costs less than DuckDB's own
    ``COPY``, whose writer hashes every value of every column for a dictionary: on a 10M-row
    day, rating took 16.8-17.0 s instead of 19.0-20.8 s, and deduplication 27.5-27.7 s
    instead of 31.1-31.4 s (``benchmarks/RESULTS.md``, sixth round).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    rows = 0
    try:
        reader = relation.to_arrow_reader(STREAM_BATCH_ROWS)
        writer = layer_writer(tmp, reader.schema, store_schema=False)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="layer-write") as pool:
            pending: Future[None] | None = None
            try:
                for batch in _stream(reader):
                    if pending is not None:
                        pending.result()
                    pending = pool.submit(writer.write_batch, batch)
                    rows += batch.num_rows
            finally:
                # Never close the file while a batch is still being written into it.
                if pending is not None:
                    pending.exception()
                writer.close()
            if pending is not None:
                pending.result()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return rows


def _stream(reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
    """The reader's batches; DuckDB's failure while computing one (pyarrow raises it as an
    OSError) raised as the ``duckdb.Error`` a ``COPY`` of the same query would raise."""
    try:
        yield from reader
    except OSError as error:
        raise duckdb.Error(str(error)) from error


def _sql_path(path: Path) -> str:
    # Paths are ours (warehouse root + generated names); quotes are doubled all the same.
    return str(path).replace("'", "''")


def sql_file_list(paths: list[Path]) -> str:
    """A DuckDB list literal of file paths for ``read_parquet``."""
    return "[" + ", ".join(f"'{_sql_path(p)}'" for p in paths) + "]"


def read_parquet_sql(paths: list[Path]) -> str:
    """A FROM-clause source reading ``paths`` as one table, without losing decimal digits.

    DuckDB reads many Parquet files with the first file's types: a DECIMAL(38,5) column read
    beside a DECIMAL(38,3) one is cut to 3 decimals. Files priced by decks of different
    precision (or a changed ``money_decimals``) are therefore read in groups of equal types,
    each group's decimals widened to the largest scale, and the groups unioned by name.
    """
    groups: dict[tuple[tuple[str, int, int], ...], list[Path]] = {}
    for path in paths:
        schema = pq.read_schema(path)
        decimals = tuple(
            (f.name, f.type.precision, f.type.scale) for f in schema if pa.types.is_decimal(f.type)
        )
        groups.setdefault(decimals, []).append(path)
    if len(groups) <= 1:
        return f"read_parquet({sql_file_list(paths)}, union_by_name = true)"
    scales: dict[str, int] = {}
    for signature in groups:
        for name, _, scale in signature:
            scales[name] = max(scales.get(name, 0), scale)
    selects = []
    for signature, group in groups.items():
        casts = ", ".join(
            f'CAST("{name}" AS DECIMAL(38, {scales[name]})) AS "{name}"' for name, _, _ in signature
        )
        replace = f" REPLACE ({casts})" if casts else ""
        selects.append(
            f"SELECT *{replace} FROM read_parquet({sql_file_list(group)}, union_by_name = true)"
        )
    return "(" + " UNION ALL BY NAME ".join(selects) + ")"


# Caches of what a day's cdrs files give (the marts' cells, the fraud rules' traffic cells,
# candidate alerts and negative-margin parts), one folder per day under ``_state``:
# retention removes a day's with its cdrs.
DAY_CACHE_DIRS = ("mart_cells", "fraud_traffic_cells", "fraud_candidates", "fraud_negative_margin")


def day_file_aggregates(
    con: duckdb.DuckDBPyConnection,
    warehouse: Warehouse,
    cache: str,
    day: str,
    query: str,
    version: str,
) -> list[Path]:
    """``query`` (over the view ``file_cdrs``) of each cdrs file of ``day``, kept per file.

    Each result is ``_state/<cache>/<day>/<cdrs file stem>.<key>.parquet``, where the key
    hashes the file's size, modification time and inode and ``version``: a file that is
    rewritten (a re-rating, an erasure) is aggregated again, a file that is not never is.
    Results of files the day no longer has are removed. Call under the writer lock.
    """
    if cache not in DAY_CACHE_DIRS:
        raise ValueError(f"not a day cache: {cache}")
    folder = warehouse.state_dir / cache / day
    paths = []
    for cdrs_file in warehouse.table_files_for_day(day):
        stat = cdrs_file.stat()
        facts = [version, cdrs_file.name, stat.st_size, stat.st_mtime_ns, stat.st_ino]
        key = hashlib.sha256(json.dumps(facts).encode()).hexdigest()[:16]
        path = folder / f"{cdrs_file.stem}.{key}.parquet"
        if not path.exists():
            con.execute(
                "CREATE OR REPLACE TEMP VIEW file_cdrs AS SELECT * FROM "
                + read_parquet_sql([cdrs_file])
            )
            copy_to_parquet_atomic(con, query, path)
        paths.append(path)
    for stale in set(folder.glob("*.parquet")) - set(paths) if folder.exists() else ():
        stale.unlink(missing_ok=True)
    return paths


def remove_file(path: Path) -> None:
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()  # only succeeds when the folder became empty


# The temporary names of the warehouse's writers, each holding the writer's pid (tried in
# this order, each matching a whole name):
#   .<name>.<pid>.<ns>.tmp         temporary_sibling (the *_atomic helpers of this module,
#                                  exports, ...)
#   .<name>.<pid>.tmp[.wal]        ingest._write_arrow_atomic; serving.publish_serving_file's
#                                  .cdr.duckdb.<pid>.tmp and DuckDB's .wal beside it
#   .part-<n>-<pid>.parquet.tmp    the number-facts cache (numbers.NumberFactsCache)
_TEMPORARY_NAMES = (
    re.compile(r"\..+\.(?P<pid>[0-9]+)\.[0-9]+\.tmp"),
    re.compile(r"\..+\.(?P<pid>[0-9]+)\.tmp(?:\.wal)?"),
    re.compile(r"\.part-[0-9]+-(?P<pid>[0-9]+)\.parquet\.tmp"),
)
_SWEPT: set[tuple[int, Path]] = set()  # (this process, a warehouse root) already swept


def _temporary_pid(name: str) -> int | None:
    """The writer's pid in a temporary name of the warehouse's writers; None for any other."""
    for pattern in _TEMPORARY_NAMES:
        match = pattern.fullmatch(name)
        if match:
            return int(match["pid"])
    return None


def _process_is_gone(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):  # PermissionError: it exists (another user's)
        return False
    return False


def remove_stale_temporaries(root: Path) -> list[Path]:
    """Delete the temporary files that writers killed before their rename left under ``root``.

    A file is removed only when its name is a writer's temporary name (``_TEMPORARY_NAMES``),
    it is a regular file (not a folder or a symbolic link; links are not followed), and the
    pid in its name is no live process on this machine. A live writer's file is kept (so is
    one whose pid was reused since: it goes at a later sweep), and nothing else is touched.
    So are the DuckDB spill folders of steps (``_state/spill/<pid>.<ns>/``, and the exports'
    ``_state/export_spill/``) whose pid is gone. Returns the paths removed. ``writer_lock``
    calls it, once per process and warehouse.
    """
    removed: list[Path] = []
    # The spill folders of DuckDB connections (``step_connection``): ``<pid>.<ns>``.
    for spill in (root / "_state" / "spill", root / "_state" / "export_spill"):
        with contextlib.suppress(OSError):
            for entry in os.scandir(spill):
                owner = entry.name.split(".", 1)[0]
                if (
                    entry.is_dir(follow_symlinks=False)
                    and owner.isdigit()
                    and _process_is_gone(int(owner))
                ):
                    shutil.rmtree(entry.path, ignore_errors=True)
                    removed.append(Path(entry.path))
    folders = [root]
    while folders:
        try:
            with os.scandir(folders.pop()) as listing:
                entries = list(listing)
        except OSError:
            continue  # a folder removed meanwhile, or unreadable: nothing of ours to clear
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                folders.append(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                pid = _temporary_pid(entry.name)
                if pid is not None and _process_is_gone(pid):
                    with contextlib.suppress(OSError):  # housekeeping never fails a writer
                        os.unlink(entry.path)
                        removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def writer_lock(root: Path, timeout_seconds: float = 3600.0) -> Iterator[None]:
    """Hold the warehouse's single-writer lock (released by the kernel if the process dies)."""
    lock_path = root / "_state" / "lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_seconds
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                    raise WarehouseBusy(
                        f"the warehouse {root} is being written by another process "
                        f"(pid {holder}); waited {timeout_seconds:.0f} s"
                    ) from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        swept = (os.getpid(), root.resolve())
        if swept not in _SWEPT:  # once per process: a walk of the warehouse is not free
            _SWEPT.add(swept)
            remove_stale_temporaries(root)
        yield
    finally:
        os.close(fd)
