"""The warehouse on disk: Parquet datasets as the system of record, and their safe writing.

Layout under ``CDR_WAREHOUSE_DIR``::

    _state/lock, _state/next_seq         the writer lock and the landing-order counter
    batches/<batch_id>.json              which files a batch took, and its landing order
    raw/<batch_id>.parquet               rows as read (strings)
    validated/<batch_id>.parquet         accepted rows, typed
    rated/<batch_id>.parquet             accepted rows with cost, revenue, margin, status
    rate_decks/<version>/                the decks that priced calls, kept to explain bills
    rejected_cdrs/<batch_id>.parquet     refused rows with their reasons
    landed_files/<batch_id>.parquet      one row per file of the batch
    duplicate_cdrs/<batch_id>.parquet    accepted rows set aside as duplicates
    cdrs/call_date=<day>/<batch_id>.parquet   the deduplicated calls a batch kept, per day
    number_facts/...                     the parsed-number cache
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
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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
        data = json.loads(path.read_text(encoding="utf-8"))
        return BatchManifest(batch_id=data["batch_id"], seq=data["seq"], files=data["files"])

    def register_batch(self, batch_id: str, files: list[str]) -> BatchManifest:
        """Record which files a batch took, once; a re-run keeps the first record."""
        existing = self.read_manifest(batch_id)
        if existing is not None:
            return existing
        manifest = BatchManifest(batch_id=batch_id, seq=None, files=sorted(files))
        self._write_manifest(manifest)
        return manifest

    def assign_seq(self, batch_id: str) -> int:
        """The batch's place in landing order, given once (call under the writer lock).

        It is given when the batch is first deduplicated, so every batch with a lower number
        has already been deduplicated: first-come-first-kept holds even when runs are
        launched or retried out of order.
        """
        manifest = self.read_manifest(batch_id)
        if manifest is None:
            raise FileNotFoundError(f"batch {batch_id} was never read: materialise raw_cdrs")
        if manifest.seq is not None:
            return manifest.seq
        counter = self.state_dir / "next_seq"
        seq = int(counter.read_text()) if counter.exists() else 1
        self._write_manifest(BatchManifest(batch_id, seq, manifest.files))
        write_text_atomic(counter, str(seq + 1))
        return seq

    def _write_manifest(self, manifest: BatchManifest) -> None:
        write_text_atomic(
            self.manifest_path(manifest.batch_id),
            json.dumps(
                {"batch_id": manifest.batch_id, "seq": manifest.seq, "files": manifest.files},
                indent=1,
            ),
        )

    def unfinished_batches(self) -> list[str]:
        """Batches that were taken but never deduplicated (a failed or killed run)."""
        folder = self.root / "batches"
        if not folder.exists():
            return []
        pending = []
        for path in sorted(folder.glob("*.json")):
            data = json.loads(path.read_text(encoding="utf-8"))
            if data["seq"] is None:
                pending.append(str(data["batch_id"]))
        return pending

    def batch_seqs(self) -> dict[str, int]:
        folder = self.root / "batches"
        if not folder.exists():
            return {}
        out = {}
        for path in folder.glob("*.json"):
            data = json.loads(path.read_text(encoding="utf-8"))
            if data["seq"] is not None:
                out[data["batch_id"]] = int(data["seq"])
        return out


@dataclass(frozen=True)
class BatchManifest:
    batch_id: str
    seq: int | None
    files: list[str]


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
            f"COPY ({query}) TO '{_sql_path(tmp)}' (FORMAT parquet, COMPRESSION zstd)",
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
        relation.write_parquet(str(tmp), compression="zstd")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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


def remove_file(path: Path) -> None:
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()  # only succeeds when the folder became empty


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
        yield
    finally:
        os.close(fd)
