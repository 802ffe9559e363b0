"""The landing folder as a trust boundary: what is listed, what is ready, what is refused.

A writer renames a finished file into place, so names starting with ``.`` or ending in
``.tmp``/``.part`` are work in progress and never listed. A file is *ready* once two looks in
a row saw the same size and modification time. Names that could be used to escape the
folder or confuse a shell (a leading ``-``, ``..``, control characters) and symbolic links
are listed, so that they are reported, but never opened.
"""

from __future__ import annotations

import os
import stat
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

IGNORED_SUFFIXES = (".tmp", ".part")


@dataclass(frozen=True)
class LandedEntry:
    name: str
    size: int
    mtime_ns: int
    is_symlink: bool

    @property
    def signature(self) -> tuple[int, int]:
        return (self.size, self.mtime_ns)


def is_ignored(name: str) -> bool:
    """Work in progress: never listed, never reported."""
    return name.startswith(".") or name.lower().endswith(IGNORED_SUFFIXES)


def unsafe_name_reason(name: str) -> str | None:
    """Why a name is refused without being opened, or None when it is safe."""
    if name.startswith("-"):
        return "file name starts with '-'"
    if ".." in name:
        return "file name contains '..'"
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        return "file name contains a control character"
    return None


def printable(name: str) -> str:
    """A name as it may be shown in a message or printed to a terminal: each character that
    is not printable (ESC, newline, NEL, a line separator ...) as ``\\xNN``, ``\\uNNNN`` or
    ``\\UNNNNNNNN``. The exact name is kept where it is data (``source_file``)."""
    if name.isprintable():
        return name
    out = []
    for ch in name:
        code = ord(ch)
        if ch.isprintable():
            out.append(ch)
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)


def list_landing(landing_dir: Path) -> list[LandedEntry]:
    """Files and symbolic links at the top of the landing folder, in name order."""
    if not landing_dir.exists():
        return []
    entries = []
    with os.scandir(landing_dir) as scan:
        for item in scan:
            if is_ignored(item.name):
                continue
            info = item.stat(follow_symlinks=False)
            is_link = stat.S_ISLNK(info.st_mode)
            if not (is_link or stat.S_ISREG(info.st_mode)):
                continue
            entries.append(LandedEntry(item.name, info.st_size, info.st_mtime_ns, is_link))
    return sorted(entries, key=lambda e: e.name)


def ready_files(
    listing: Iterable[LandedEntry],
    previous: Mapping[str, tuple[int, int]],
    claimed: Mapping[str, tuple[int, int]] | None = None,
) -> list[LandedEntry]:
    """Entries unchanged since the previous look and not yet claimed by a run, in name order."""
    taken = claimed or {}
    return [
        e
        for e in listing
        if taken.get(e.name) != e.signature and previous.get(e.name) == e.signature
    ]
