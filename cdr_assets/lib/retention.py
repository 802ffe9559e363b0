"""Retention: which old files the warehouse deletes, when, and how it reports them.

The policy (every number is a count of days, read from the environment by
``RetentionPolicy.from_env``; an empty variable means the default, ``forever`` or ``keep``
means never delete):

==========================  ==========  ====================================================
variable                    default     what expires
==========================  ==========  ====================================================
CDR_RETENTION_BATCH_DAYS    30          a batch's layer files ``raw/<batch>.parquet`` (and
                                        ``raw/<batch>.files.parquet``), ``validated/``,
                                        ``rated/``, ``enriched/``, and its folder of
                                        processed landing files ``landing_archive/<batch>/``
CDR_RETENTION_REJECTED_DAYS 400         a batch's refused data: ``rejected_cdrs/<batch>``,
                                        ``duplicate_cdrs/<batch>`` and the unreadable files
                                        ``landing_rejected/<batch>/`` (the only copy of what
                                        was refused, hence the long default)
CDR_RETENTION_CDRS_DAYS     400         ``cdrs/call_date=<day>/*.parquet`` by call date,
                                        and what the marts and the fraud rules keep of
                                        the day's files, ``_state/<cache>/<day>/``
CDR_RETENTION_MARTS_DAYS    forever     ``<mart>/<YYYY-MM-DD>.parquet`` and
                                        ``fraud_alerts/<YYYY-MM-DD>.parquet`` by day, and
                                        ``monthly_summary/<YYYY-MM>.parquet`` once the whole
                                        month is past the cut
==========================  ==========  ====================================================

The cut. With ``N`` days and the run's UTC date ``today``, the cut is ``today - N``: an item
expires when its date is *before* the cut, so a day exactly ``N`` days old is kept (with 30
days on 2026-11-25, 2026-10-25 goes and 2026-10-26 stays). A batch's date is the UTC date of
the latest ``landed_at`` in ``landed_files/<batch>.parquet``, else (no readable file) the
modification time of its manifest ``batches/<batch>.json``. A month expires when its last
day is before the cut.

Never deleted: any file of a batch that is not finished (its manifest's state is not
``published``: a failed, killed or running batch still needs them);
``landed_files/<batch>.parquet`` and ``batches/<batch>.json`` (the audit trail of what
landed, a few hundred bytes a batch, and the manifests hold the landing order that
deduplication of later batches and ``rebuild_cdrs_day`` rely on); ``rate_decks/``,
``number_facts/``, ``exports/`` (billing exports), ``_state/`` (but for the traffic
cells above) and ``cdr.duckdb``; anything
whose name does not parse as the date of its kind, temporary files, symbolic links (never
followed) and anything outside the warehouse.

Use: ``plan_retention`` lists what would go (a dry run deletes nothing);
``apply_retention`` deletes exactly the planned paths, under the warehouse writer lock like
every other writer, and can be run again or after files vanished. Afterwards republish the
serving file (its views name the files that existed when it was built) and delete the
Dagster partitions the report names.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cdr_assets.lib.marts import DAY_TABLES, MONTH_TABLES
from cdr_assets.lib.warehouse import DAY_CACHE_DIRS, PUBLISHED, Warehouse, remove_file

# The kinds of item, each with its own number of days.
BATCH, REJECTED, CDRS, MARTS = "batch", "rejected", "cdrs", "marts"
KINDS = (BATCH, REJECTED, CDRS, MARTS)

# Per-batch files, by kind (``raw`` also holds ``<batch>.files.parquet``, the file outcomes).
BATCH_LAYER_FILES = (
    "raw/{b}.parquet",
    "raw/{b}.files.parquet",
    "validated/{b}.parquet",
    "rated/{b}.parquet",
    "enriched/{b}.parquet",
)
REJECTED_FILES = ("rejected_cdrs/{b}.parquet", "duplicate_cdrs/{b}.parquet")
# The fraud alerts of a day are kept like its marts; the caches of per-file aggregates of a
# day's cdrs (``_state/<cache>/<day>/``, ``warehouse.DAY_CACHE_DIRS``) go with its cdrs.
DAY_MART_TABLES = (*DAY_TABLES, "fraud_alerts")
MONTH_MART_TABLES = MONTH_TABLES

DEFAULT_BATCH_DAYS = 30
DEFAULT_REJECTED_DAYS = 400
DEFAULT_CDRS_DAYS = 400

ENV_VARIABLES = {
    "batch_days": "CDR_RETENTION_BATCH_DAYS",
    "rejected_days": "CDR_RETENTION_REJECTED_DAYS",
    "cdrs_days": "CDR_RETENTION_CDRS_DAYS",
    "marts_days": "CDR_RETENTION_MARTS_DAYS",
}
_FOREVER = ("forever", "keep")
_DAY_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_MONTH_RE = re.compile(r"\d{4}-\d{2}")


@dataclass(frozen=True)
class RetentionPolicy:
    """Days each kind of item is kept; ``None`` keeps it forever."""

    batch_days: int | None = DEFAULT_BATCH_DAYS
    rejected_days: int | None = DEFAULT_REJECTED_DAYS
    cdrs_days: int | None = DEFAULT_CDRS_DAYS
    marts_days: int | None = None

    def __post_init__(self) -> None:
        for name, variable in ENV_VARIABLES.items():
            days = getattr(self, name)
            if days is not None and (
                isinstance(days, bool) or not isinstance(days, int) or days < 0
            ):
                raise ValueError(f"{variable} ({name}) must be a whole number of days >= 0")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RetentionPolicy:
        env = os.environ if env is None else env
        values: dict[str, int | None] = {}
        for name, variable in ENV_VARIABLES.items():
            raw = (env.get(variable) or "").strip()
            if not raw:
                continue  # the default
            if raw.lower() in _FOREVER:
                values[name] = None
            elif re.fullmatch(r"[0-9]+", raw):
                values[name] = int(raw)
            else:
                raise ValueError(
                    f"{variable}={raw!r}: expected a whole number of days >= 0, "
                    "'forever' or 'keep' (empty for the default)"
                )
        return cls(**values)

    def days(self, kind: str) -> int | None:
        return {
            BATCH: self.batch_days,
            REJECTED: self.rejected_days,
            CDRS: self.cdrs_days,
            MARTS: self.marts_days,
        }[kind]

    def cut(self, kind: str, today: date) -> date | None:
        """The first date kept for ``kind``: items dated before it expire (None: no cut)."""
        days = self.days(kind)
        return None if days is None else today - timedelta(days=days)


@dataclass(frozen=True)
class PlannedPath:
    """One file or folder to delete, the item it belongs to and its size when planned."""

    kind: str  # one of KINDS
    key: str  # batch id, call date, or mart partition "<table>/<date or month>"
    path: Path
    bytes: int
    is_dir: bool


@dataclass(frozen=True)
class RetentionPlan:
    """What a retention run would delete (computing it deletes nothing: the dry run)."""

    root: Path
    today: date
    policy: RetentionPolicy
    batch_ids: tuple[str, ...]  # batches whose layer files / archived landing files go
    rejected_batch_ids: tuple[str, ...]  # batches whose refused rows / files go
    call_dates: tuple[str, ...]  # days of cdrs that go
    mart_partitions: tuple[str, ...]  # "<table>/<YYYY-MM-DD>" or "monthly_summary/<YYYY-MM>"
    paths: tuple[PlannedPath, ...]
    # Every deduplicated batch whose layers are past the cut, with files left or not: the
    # ``landing_batches`` partitions to delete (re-running one would find no files).
    expired_batches: tuple[str, ...]
    skipped: tuple[str, ...]  # why something past its cut is kept (unfinished batch, link)

    @property
    def total_bytes(self) -> int:
        return sum(p.bytes for p in self.paths)

    def keys(self, kind: str) -> tuple[str, ...]:
        return {
            BATCH: self.batch_ids,
            REJECTED: self.rejected_batch_ids,
            CDRS: self.call_dates,
            MARTS: self.mart_partitions,
        }[kind]

    def is_expired_call_date(self, key: str) -> bool:
        """Whether a ``call_dates`` partition key is past the cdrs cut (for stale keys)."""
        cut = self.policy.cut(CDRS, self.today)
        day = _parse_day(key)
        return cut is not None and day is not None and day < cut

    def summary(self) -> str:
        head = (
            f"retention plan for {self.today} (dry run, nothing deleted): "
            f"{len(self.paths)} paths, {_size(self.total_bytes)}"
        )
        lines = [head]
        for kind in KINDS:
            paths = [p for p in self.paths if p.kind == kind]
            lines.append(
                f"  {_kind_line(kind, self.policy, self.today)}: {len(self.keys(kind))} "
                f"{_NOUNS[kind]} ({_brief(self.keys(kind), 5)}), {len(paths)} paths, "
                f"{_size(sum(p.bytes for p in paths))}"
            )
        if self.skipped:
            lines.append(f"  kept although past the cut: {_brief(self.skipped, 5)}")
        return "\n".join(lines)

    def as_metadata(self) -> dict[str, int | str]:
        meta: dict[str, int | str] = {
            "dry_run": "yes",
            "today": self.today.isoformat(),
            "paths": len(self.paths),
            "bytes": self.total_bytes,
        }
        for kind in KINDS:
            cut = self.policy.cut(kind, self.today)
            meta[f"{kind}_cut"] = cut.isoformat() if cut else "kept forever"
            meta[f"{kind}_{_NOUNS[kind]}"] = len(self.keys(kind))
            meta[f"{kind}_paths"] = sum(1 for p in self.paths if p.kind == kind)
            meta[f"{kind}_bytes"] = sum(p.bytes for p in self.paths if p.kind == kind)
            meta[f"{kind}_keys"] = _brief(self.keys(kind), 50)
        meta["skipped"] = _brief(self.skipped, 50)
        return meta


@dataclass(frozen=True)
class RetentionReport:
    """What ``apply_retention`` deleted."""

    plan: RetentionPlan
    deleted: tuple[PlannedPath, ...]  # removed by this run, with their size when removed
    already_gone: int  # planned paths that no longer existed (a second run, a race)
    errors: tuple[str, ...]  # paths that could not (or must not) be deleted: kept
    # Items of the plan with none of their planned paths left (deleted now or before):
    batch_ids: tuple[str, ...]
    rejected_batch_ids: tuple[str, ...]
    call_dates: tuple[str, ...]  # the ``call_dates`` partitions to delete
    mart_partitions: tuple[str, ...]
    # The ``landing_batches`` partitions to delete: the plan's expired batches, less any
    # whose layer files could not be deleted.
    batch_partitions: tuple[str, ...]
    counts: Mapping[str, int]  # kind -> paths deleted
    bytes: Mapping[str, int]  # kind -> bytes deleted

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes.values())

    @property
    def serving_stale(self) -> bool:
        """Whether ``cdr.duckdb`` names a deleted file: republish it."""
        return any(p.kind in (REJECTED, CDRS) and not p.is_dir for p in self.deleted)

    def summary(self) -> str:
        lines = [
            f"retention for {self.plan.today}: deleted {len(self.deleted)} paths, "
            f"{_size(self.total_bytes)}"
            + (f"; {self.already_gone} already gone" if self.already_gone else "")
            + (f"; {len(self.errors)} errors" if self.errors else "")
        ]
        gone = {
            BATCH: self.batch_ids,
            REJECTED: self.rejected_batch_ids,
            CDRS: self.call_dates,
            MARTS: self.mart_partitions,
        }
        for kind in KINDS:
            lines.append(
                f"  {_kind_line(kind, self.plan.policy, self.plan.today)}: "
                f"{len(gone[kind])} {_NOUNS[kind]} ({_brief(gone[kind], 5)}), "
                f"{self.counts.get(kind, 0)} paths, {_size(self.bytes.get(kind, 0))}"
            )
        lines.extend(f"  error: {e}" for e in self.errors[:5])
        if len(self.errors) > 5:
            lines.append(f"  … and {len(self.errors) - 5} more errors")
        return "\n".join(lines)

    def as_metadata(self) -> dict[str, int | str]:
        meta: dict[str, int | str] = {
            "dry_run": "no",
            "today": self.plan.today.isoformat(),
            "paths_deleted": len(self.deleted),
            "bytes_deleted": self.total_bytes,
            "already_gone": self.already_gone,
            "errors": len(self.errors),
        }
        for kind in KINDS:
            meta[f"{kind}_paths"] = self.counts.get(kind, 0)
            meta[f"{kind}_bytes"] = self.bytes.get(kind, 0)
        meta["batch_ids"] = _brief(self.batch_ids, 50)
        meta["rejected_batch_ids"] = _brief(self.rejected_batch_ids, 50)
        meta["call_dates"] = _brief(self.call_dates, 50)
        meta["mart_partitions"] = _brief(self.mart_partitions, 50)
        if self.errors:
            meta["error_list"] = _brief(self.errors, 20)
        return meta


# -- planning ------------------------------------------------------------------------------


def plan_retention(warehouse: Warehouse, policy: RetentionPolicy, today: date) -> RetentionPlan:
    """Everything the policy would delete on ``today`` (UTC date); deletes nothing."""
    root = warehouse.root
    paths: list[PlannedPath] = []
    skipped: list[str] = []
    keys: dict[str, list[str]] = {kind: [] for kind in KINDS}
    batch_cut = policy.cut(BATCH, today)
    rejected_cut = policy.cut(REJECTED, today)
    expired_batches: list[str] = []

    def add(kind: str, key: str, candidates: Iterable[Path]) -> None:
        found = False
        for path in candidates:
            planned = _planned(root, kind, key, path, skipped)
            if planned is not None:
                paths.append(planned)
                found = True
        if found:
            keys[kind].append(key)

    for batch_id, seq, manifest in _manifests(warehouse, skipped):
        if batch_cut is None and rejected_cut is None:
            break
        landed = _batch_date(warehouse, batch_id, manifest)
        batch_expired = batch_cut is not None and landed < batch_cut
        rejected_expired = rejected_cut is not None and landed < rejected_cut
        if not (batch_expired or rejected_expired):
            continue
        if seq is None:
            skipped.append(f"batch {batch_id} (landed {landed}): not finished yet")
            continue
        if batch_expired:
            expired_batches.append(batch_id)
            add(
                BATCH,
                batch_id,
                [root / t.format(b=batch_id) for t in BATCH_LAYER_FILES]
                + [warehouse.archive_dir(batch_id)],
            )
        if rejected_expired:
            add(
                REJECTED,
                batch_id,
                [root / t.format(b=batch_id) for t in REJECTED_FILES]
                + [warehouse.rejected_files_dir(batch_id)],
            )

    cdrs_cut = policy.cut(CDRS, today)
    if cdrs_cut is not None and warehouse.cdrs_dir.is_dir():
        for folder in sorted(warehouse.cdrs_dir.glob("call_date=*")):
            key = folder.name.removeprefix("call_date=")
            day = _parse_day(key)
            if day is not None and day < cdrs_cut and folder.is_dir():
                add(CDRS, key, sorted(folder.glob("*.parquet")))
    for cache in DAY_CACHE_DIRS:
        cells = warehouse.state_dir / cache
        if cdrs_cut is None or not cells.is_dir():
            continue
        for folder in sorted(cells.iterdir()):
            day = _parse_day(folder.name)
            if day is not None and day < cdrs_cut and folder.is_dir():
                add(CDRS, folder.name, [folder])

    marts_cut = policy.cut(MARTS, today)
    if marts_cut is not None:
        for table in DAY_MART_TABLES + MONTH_MART_TABLES:
            folder = root / table
            if not folder.is_dir():
                continue
            for path in sorted(folder.glob("*.parquet")):
                if table in MONTH_MART_TABLES:
                    last = _month_last_day(path.stem)
                else:
                    last = _parse_day(path.stem)
                if last is not None and last < marts_cut:
                    add(MARTS, f"{table}/{path.stem}", [path])

    return RetentionPlan(
        root=root,
        today=today,
        policy=policy,
        batch_ids=tuple(keys[BATCH]),
        rejected_batch_ids=tuple(keys[REJECTED]),
        call_dates=tuple(sorted(set(keys[CDRS]))),
        mart_partitions=tuple(keys[MARTS]),
        paths=tuple(paths),
        expired_batches=tuple(expired_batches),
        skipped=tuple(skipped),
    )


def _manifests(warehouse: Warehouse, skipped: list[str]) -> Iterable[tuple[str, int | None, Path]]:
    """(batch id, seq, manifest path) of every batch, in batch-id order; the seq is None
    while the batch is unfinished (not yet published: a rerun still needs its files)."""
    folder = warehouse.root / "batches"
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.json")):
        batch_id = path.stem
        if not _safe_component(batch_id):
            skipped.append(f"batch {batch_id!r}: not a plain file name, never deleted")
            continue
        try:
            data = _read_json(path)
            seq = data["seq"]
            if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int)):
                raise ValueError(f"seq is {seq!r}")
            if data.get("state", PUBLISHED) != PUBLISHED:
                seq = None
        except (OSError, ValueError, KeyError) as exc:
            skipped.append(f"batch {batch_id}: unreadable manifest ({exc}), never deleted")
            continue
        yield batch_id, seq, path


def _read_json(path: Path) -> dict[str, object]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def _batch_date(warehouse: Warehouse, batch_id: str, manifest: Path) -> date:
    """The UTC date of the batch's latest ``landed_at``, else of its manifest's mtime."""
    landed = warehouse.batch_file("landed_files", batch_id)
    try:
        column = pq.read_table(landed, columns=["landed_at"])["landed_at"]
        latest = pc.max(column).as_py()
    except (OSError, KeyError, pa.ArrowException):
        latest = None
    if isinstance(latest, datetime):
        if latest.tzinfo is None:
            latest = latest.replace(tzinfo=UTC)
        return latest.astimezone(UTC).date()
    return datetime.fromtimestamp(manifest.stat().st_mtime, UTC).date()


def _parse_day(text: str) -> date | None:
    if not _DAY_RE.fullmatch(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _month_last_day(text: str) -> date | None:
    if not _MONTH_RE.fullmatch(text):
        return None
    year, month = int(text[:4]), int(text[5:])
    if not 1 <= month <= 12 or year < 1:
        return None
    following = date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)
    return following - timedelta(days=1)


def _safe_component(name: str) -> bool:
    return (
        bool(name)
        and not name.startswith(".")
        and "/" not in name
        and "\\" not in name
        and "\x00" not in name
    )


def _inside(root: Path, path: Path) -> bool:
    """``path`` is itself no symbolic link and its folder resolves inside ``root``."""
    try:
        inside = path.parent.resolve().is_relative_to(root.resolve())
    except OSError:
        return False
    return inside and _safe_component(path.name) and not path.is_symlink()


def _planned(root: Path, kind: str, key: str, path: Path, skipped: list[str]) -> PlannedPath | None:
    if path.is_symlink():
        skipped.append(f"{_rel(root, path)}: symbolic link, never followed nor deleted")
        return None
    if not path.exists():
        return None
    if not _inside(root, path):
        skipped.append(f"{_rel(root, path)}: not inside the warehouse, not deleted")
        return None
    is_dir = path.is_dir()
    return PlannedPath(kind, key, path, _measure(path, is_dir), is_dir)


def _measure(path: Path, is_dir: bool) -> int:
    if not is_dir:
        try:
            return path.lstat().st_size
        except OSError:
            return 0
    total = 0
    for folder, _dirs, files in os.walk(path, followlinks=False):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


# -- deleting ------------------------------------------------------------------------------


def apply_retention(warehouse: Warehouse, plan: RetentionPlan) -> RetentionReport:
    """Delete exactly the planned paths; call under the warehouse writer lock.

    A path already gone is counted as such, not an error; a folder that became a symbolic
    link or leads outside the warehouse is refused (reported in ``errors``, kept). Running
    the same plan again deletes nothing more. Republish the serving file afterwards when
    ``serving_stale``.
    """
    root = warehouse.root
    if root.resolve() != plan.root.resolve():
        raise ValueError(f"the plan was made for the warehouse {plan.root}, not {root}")
    deleted: list[PlannedPath] = []
    errors: list[str] = []
    failed: set[tuple[str, str]] = set()
    gone = 0
    for planned in plan.paths:
        path = planned.path
        if not (path.is_symlink() or path.exists()):
            gone += 1
            continue
        problem = _refusal(root, planned)
        size = 0
        if problem is None:
            size = _measure(path, planned.is_dir)
            problem = _delete(path, planned.is_dir)
        if problem is None:
            deleted.append(PlannedPath(planned.kind, planned.key, path, size, planned.is_dir))
        else:
            errors.append(f"{_rel(root, path)}: {problem}")
            failed.add((planned.kind, planned.key))

    def remaining(kind: str) -> tuple[str, ...]:
        return tuple(k for k in plan.keys(kind) if (kind, k) not in failed)

    counts = {kind: sum(1 for p in deleted if p.kind == kind) for kind in KINDS}
    sizes = {kind: sum(p.bytes for p in deleted if p.kind == kind) for kind in KINDS}
    return RetentionReport(
        plan=plan,
        deleted=tuple(deleted),
        already_gone=gone,
        errors=tuple(errors),
        batch_ids=remaining(BATCH),
        rejected_batch_ids=remaining(REJECTED),
        call_dates=remaining(CDRS),
        mart_partitions=remaining(MARTS),
        batch_partitions=tuple(b for b in plan.expired_batches if (BATCH, b) not in failed),
        counts=counts,
        bytes=sizes,
    )


def _refusal(root: Path, planned: PlannedPath) -> str | None:
    """Why a planned path must not be deleted now (it changed since it was planned)."""
    path = planned.path
    if path.is_symlink():
        return "became a symbolic link: not followed, not deleted"
    if path.is_dir() != planned.is_dir:
        return "became a folder: not deleted" if path.is_dir() else "no longer a folder"
    if not _inside(root, path):
        return "not inside the warehouse: not deleted"
    return None


def _delete(path: Path, is_dir: bool) -> str | None:
    try:
        if not is_dir:
            remove_file(path)
            return None
        problems: list[str] = []
        _rmtree(path, problems)
        if problems:
            return "; ".join(problems[:3])
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # landing_archive/ itself goes when it became empty
        return None
    except OSError as exc:
        return str(exc)


def _rmtree(path: Path, problems: list[str]) -> None:
    """Remove a folder (links inside it are unlinked, never followed); note each failure."""

    def record(exc: BaseException) -> None:
        if not isinstance(exc, FileNotFoundError):  # vanished meanwhile: what we wanted
            problems.append(str(exc))

    def onexc(_func: object, _path: str, exc: BaseException) -> None:
        record(exc)

    def onerror(_func: object, _path: str, info: tuple[type, BaseException, object]) -> None:
        record(info[1])

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=onexc)
    else:
        shutil.rmtree(path, onerror=onerror)


# -- text ----------------------------------------------------------------------------------

_NOUNS = {BATCH: "batches", REJECTED: "batches", CDRS: "days", MARTS: "partitions"}
_LABELS = {
    BATCH: "batch layers and archived landing files",
    REJECTED: "refused rows, duplicates and rejected files",
    CDRS: "cdrs call dates",
    MARTS: "marts",
}


def _kind_line(kind: str, policy: RetentionPolicy, today: date) -> str:
    cut = policy.cut(kind, today)
    if cut is None:
        return f"{_LABELS[kind]} (kept forever)"
    return f"{_LABELS[kind]} (before {cut}, {policy.days(kind)} days)"


def _brief(items: Iterable[str], limit: int) -> str:
    items = list(items)
    if not items:
        return "none"
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown} … (+{len(items) - limit} more)"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _rel(root: Path, path: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


__all__ = [
    "KINDS",
    "PlannedPath",
    "RetentionPlan",
    "RetentionPolicy",
    "RetentionReport",
    "apply_retention",
    "plan_retention",
]
