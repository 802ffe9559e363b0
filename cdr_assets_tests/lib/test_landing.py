"""What the landing folder lists, refuses and considers ready."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cdr_assets.lib.landing import is_ignored, list_landing, ready_files, unsafe_name_reason


@pytest.mark.parametrize(
    ("name", "ignored"),
    [
        ("calls.csv", False),
        (".calls.csv", True),
        ("calls.csv.tmp", True),
        ("calls.csv.part", True),
        ("calls.CSV.TMP", True),
        ("calls.tmp.csv", False),
    ],
)
def test_work_in_progress_is_ignored(name: str, ignored: bool) -> None:
    assert is_ignored(name) is ignored


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("calls.csv", None),
        ("-calls.csv", "file name starts with '-'"),
        ("calls..csv", "file name contains '..'"),
        ("calls\x07.csv", "file name contains a control character"),
        ("calls\n.csv", "file name contains a control character"),
        ("appels-été.csv", None),
    ],
)
def test_unsafe_names(name: str, reason: str | None) -> None:
    assert unsafe_name_reason(name) == reason


def test_listing_is_in_name_order_and_skips_folders_and_work_in_progress(tmp_path: Path) -> None:
    for name in ("b.csv", "a.json", ".hidden.csv", "c.csv.part"):
        (tmp_path / name).write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.csv").symlink_to(tmp_path / "b.csv")
    listing = list_landing(tmp_path)
    assert [e.name for e in listing] == ["a.json", "b.csv", "link.csv"]
    assert [e.is_symlink for e in listing] == [False, False, True]


def test_a_file_is_ready_when_two_looks_agree_and_it_is_not_claimed(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("x")
    first = list_landing(tmp_path)
    assert ready_files(first, {}) == []  # first sight: wait a tick
    seen = {e.name: e.signature for e in first}
    assert [e.name for e in ready_files(list_landing(tmp_path), seen)] == ["a.csv"]
    path.write_text("xy")  # still being written
    assert ready_files(list_landing(tmp_path), seen) == []
    os.utime(path, ns=(1, 1))
    now = list_landing(tmp_path)
    claimed = {e.name: e.signature for e in now}
    assert ready_files(now, claimed, claimed) == []
