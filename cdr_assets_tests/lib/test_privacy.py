"""Caller numbers in the serving file and exports: clear, keyed hash or mask."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from cdr_assets.cli import main
from cdr_assets.lib import privacy
from cdr_assets.lib.serving import publish_serving_file
from cdr_assets.lib.settings import Settings, SettingsError
from cdr_assets.lib.warehouse import Warehouse, read_parquet_sql


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CDR_LANDING_DIR", str(tmp_path / "landing"))
    monkeypatch.setenv("CDR_WAREHOUSE_DIR", str(tmp_path / "warehouse"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv(privacy.KEY_ENV, raising=False)
    return tmp_path


def served(env: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(env / "warehouse" / "cdr.duckdb"), read_only=True) as con:
        return con.execute(sql).fetchall()


def parquet_cdrs(env: Path, sql: str) -> list[tuple]:
    files = Warehouse(env / "warehouse").table_files("cdrs")
    with duckdb.connect() as con:
        return con.execute(sql.format(cdrs=read_parquet_sql(files))).fetchall()


def test_the_hash_is_keyed_stable_and_one_per_number() -> None:
    numbers = pa.array(["+442079460958", "+12025550123", None])
    first = privacy.caller_hashes(numbers, b"key-1").to_pylist()
    assert first == privacy.caller_hashes(numbers, b"key-1").to_pylist()
    assert [r["caller_number"] for r in first] == ["+442079460958", "+12025550123"]
    assert all(re.fullmatch(r"[0-9a-f]{24}", r["caller_hash"]) for r in first)
    other = privacy.caller_hashes(numbers, b"key-2").to_pylist()
    assert {r["caller_hash"] for r in first}.isdisjoint(r["caller_hash"] for r in other)


def test_an_unknown_mode_is_a_setting_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="CDR_CALLER_NUMBERS='plain'"):
        Settings.from_env({"CDR_CALLER_NUMBERS": "plain", "CDR_WAREHOUSE_DIR": str(tmp_path)})


def test_hash_mode_serves_and_exports_hashes_and_keeps_clear_numbers_in_parquet(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CDR_CALLER_NUMBERS", "hash")
    assert main(["generate"]) == 0
    assert main(["process"]) == 0
    clear = parquet_cdrs(env, "SELECT count(DISTINCT caller_number) FROM {cdrs}")
    assert served(env, "SELECT count(DISTINCT caller_number) FROM cdrs") == clear
    assert served(
        env,
        "SELECT count(*) FROM cdrs WHERE caller_number LIKE '+%' OR caller_number <> caller_hash",
    ) == [(0,)]
    # The Parquet layer keeps the clear number beside its hash.
    assert parquet_cdrs(env, "SELECT count(*) FROM {cdrs} WHERE caller_number LIKE '+%'")[0][0] > 0
    # Refused lines as sent: long digit runs hidden.
    raw = served(env, "SELECT raw_record FROM rejected_cdrs WHERE raw_record IS NOT NULL")
    assert raw and not any(re.search(r"\+?[0-9]{6,}", r[0]) for r in raw)
    # The key stays in the warehouse, not in the serving file.
    key = (env / "warehouse" / "_state" / "caller_hash_key").read_text()
    assert key.encode() not in (env / "warehouse" / "cdr.duckdb").read_bytes()

    day = served(env, "SELECT min(call_date) FROM cdrs")[0][0]
    out = env / "calls.csv"
    assert main(["export", "--format", "csv", "--start-date", str(day), "--end-date", str(day),
                 "--output", str(out)]) == 0  # fmt: skip
    with out.open(newline="") as handle:
        callers = {row["caller_number"] for row in csv.DictReader(handle)}
    assert callers and all(re.fullmatch(r"[0-9a-f]{24}", c) for c in callers if c)


def test_mask_mode_shows_the_ends_of_each_number(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CDR_CALLER_NUMBERS", "mask")
    assert main(["generate"]) == 0
    assert main(["process"]) == 0
    pairs = dict(parquet_cdrs(env, "SELECT call_id, caller_number FROM {cdrs}"))
    shown = dict(served(env, "SELECT call_id, caller_number FROM cdrs"))
    assert shown.keys() == pairs.keys()
    for call_id, number in pairs.items():
        if number is None:
            assert shown[call_id] is None
        else:
            masked = shown[call_id]
            assert len(masked) == len(number)
            assert masked[:4] == number[:4] and masked[-2:] == number[-2:]
            assert set(masked[4:-2]) <= {"*"}


def test_clear_mode_serves_the_numbers_as_stored(env: Path) -> None:
    assert main(["generate"]) == 0
    assert main(["process"]) == 0
    assert served(env, "SELECT count(*) FROM cdrs WHERE caller_number LIKE '+%'")[0][0] > 0


@pytest.mark.parametrize("mode", ["hash", "mask"])
def test_alert_subjects_that_are_callers_are_hidden_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.delenv(privacy.KEY_ENV, raising=False)
    warehouse = Warehouse(tmp_path / "warehouse")
    folder = warehouse.root / "fraud_alerts"
    folder.mkdir(parents=True)
    with duckdb.connect() as con:
        con.execute(
            f"COPY (SELECT * FROM ({_empty_alerts()}) UNION ALL SELECT DATE '2026-11-20', 'a1', "
            "'wangiri', 'ERROR', 'caller', '+442079460958', NULL, NULL, '{}', '{}', [], 1.0, "
            "'', 'v' UNION ALL SELECT DATE '2026-11-20', 'a2', 'traffic', 'WARN', 'carrier', "
            f"'carrier_001', NULL, NULL, '{{}}', '{{}}', [], 1.0, '', 'v') "
            f"TO '{folder / '2026-11-20.parquet'}' (FORMAT parquet)"
        )
    publish_serving_file(warehouse, mode)
    with duckdb.connect(str(warehouse.serving_path), read_only=True) as con:
        shown = dict(con.execute("SELECT alert_id, subject FROM fraud_alerts").fetchall())
    assert shown["a2"] == "carrier_001"
    if mode == "hash":
        expected = privacy.caller_hashes(
            pa.array(["+442079460958"]), privacy.caller_key(warehouse)
        ).to_pylist()[0]["caller_hash"]
        assert shown["a1"] == expected
        assert b"2079460958" not in warehouse.serving_path.read_bytes()
    else:
        assert shown["a1"] == "+442*******58"


def _empty_alerts() -> str:
    from cdr_assets.lib.serving import EMPTY_TABLES, _empty_select

    return _empty_select(EMPTY_TABLES["fraud_alerts"])
