"""`cdr-pipeline generate` then `cdr-pipeline process`, as a user runs them."""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest

from cdr_assets.cli import main
from cdr_assets.lib.schemas import REASONS

SHIPPED_RATES = Path(__file__).resolve().parents[1] / "rates"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CDR_LANDING_DIR", str(tmp_path / "landing"))
    monkeypatch.setenv("CDR_WAREHOUSE_DIR", str(tmp_path / "warehouse"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return tmp_path


def serving(env: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(env / "warehouse" / "cdr.duckdb"), read_only=True)


def test_process_on_generated_data_satisfies_the_contract(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["generate"]) == 0
    landing = env / "landing"
    (landing / "zz_corrupt.csv.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    assert main(["process"]) == 0
    summary = capsys.readouterr().out
    assert "7 files (1 rejected)" in summary
    assert "file rejected: zz_corrupt.csv.gz: broken gzip compression" in summary
    assert sorted(p.name for p in landing.iterdir()) == []

    with serving(env) as con:
        # Nothing lost: per file, read = accepted + rejected; accepted = kept + duplicates.
        assert con.execute(
            "SELECT count(*) FROM landed_files WHERE rows_read <> rows_accepted + rows_rejected"
        ).fetchone() == (0,)
        accepted, rejected = con.execute(
            "SELECT sum(rows_accepted), sum(rows_rejected) FROM landed_files"
        ).fetchone() or (0, 0)
        kept = con.execute("SELECT count(*) FROM cdrs").fetchone()
        duplicates = con.execute("SELECT count(*) FROM duplicate_cdrs").fetchone()
        assert kept and duplicates and accepted == kept[0] + duplicates[0]
        assert con.execute("SELECT count(*) FROM rejected_cdrs").fetchone() == (rejected,)
        assert con.execute("SELECT count(*), count(DISTINCT call_id) FROM cdrs").fetchone() == (
            kept[0],
            kept[0],
        )
        # Every reason of the contract occurs in the sample.
        seen = {
            r
            for (r,) in con.execute("SELECT DISTINCT unnest(reasons) FROM rejected_cdrs").fetchall()
        }
        assert seen == set(REASONS)
        # The replayed file adds nothing: all its accepted rows are identical duplicates.
        replay = con.execute(
            "SELECT source_file, replay_of, rows_accepted, rows_duplicate FROM landed_files "
            "WHERE replay_of IS NOT NULL"
        ).fetchall()
        assert len(replay) == 1 and replay[0][2] == replay[0][3]
        # The corrupt file is reported and moved aside.
        status, error, stored = con.execute(
            "SELECT status, error, stored_path FROM landed_files "
            "WHERE source_file = 'zz_corrupt.csv.gz'"
        ).fetchone() or ("", "", "")
        assert status == "rejected" and "gzip" in error
        assert (env / "warehouse" / stored).exists()
        days = con.execute("SELECT count(DISTINCT call_date) FROM cdrs").fetchone()
        assert days == (3,)
        # Every call is priced: the sample has answered, unanswered and deck-less carriers.
        statuses = dict(
            con.execute("SELECT rating_status, count(*) FROM cdrs GROUP BY 1").fetchall()
        )
        assert {"rated", "unanswered", "unknown_carrier"} <= set(statuses)
        assert sum(statuses.values()) == kept[0]
        flags = {f for (f,) in con.execute("SELECT DISTINCT unnest(flags) FROM cdrs").fetchall()}
        assert {"self_call", "caller_unparsed", "country_mismatch", "duration_mismatch"} <= flags

    # Again, with nothing new: nothing changes.
    before = (env / "warehouse" / "cdr.duckdb").stat().st_mtime_ns
    assert main(["process"]) == 0
    assert (env / "warehouse" / "cdr.duckdb").stat().st_mtime_ns == before


def test_a_bad_setting_is_refused_with_a_clear_message(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CDR_SOURCE_TIMEZONE", "Mars/Olympus")
    assert main(["process"]) == 2
    assert "CDR_SOURCE_TIMEZONE='Mars/Olympus' is not an IANA time zone" in capsys.readouterr().err


def test_a_failing_step_exits_non_zero_and_says_which(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    not_a_folder = env / "warehouse-is-a-file"
    not_a_folder.write_text("")
    monkeypatch.setenv("CDR_WAREHOUSE_DIR", str(not_a_folder))
    assert main(["generate"]) == 0
    assert main(["process"]) == 1
    assert "FAILED raw_cdrs" in capsys.readouterr().err


@pytest.fixture
def own_rates(env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    rates = env / "rates"
    shutil.copytree(SHIPPED_RATES, rates)
    monkeypatch.setenv("CDR_RATES_DIR", str(rates))
    return rates


def test_a_broken_deck_stops_the_batch_and_the_next_process_finishes_it(
    env: Path, own_rates: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deck = own_rates / "cost" / "carrier_002.csv"
    good = deck.read_text()
    lines = good.splitlines(keepends=True)
    lines[2] = lines[2].replace("0.015", "-0.015")
    deck.write_text("".join(lines))
    assert main(["generate"]) == 0
    assert main(["process"]) == 1
    err = capsys.readouterr().err
    assert "FAILED rate_decks" in err
    assert "cost/carrier_002.csv line 3" in err
    assert not (env / "warehouse" / "cdr.duckdb").exists()  # nothing priced wrongly

    deck.write_text(good)
    assert main(["process"]) == 0
    assert "finishing batch" in capsys.readouterr().err
    with serving(env) as con:
        assert con.execute("SELECT count(*) FROM landed_files").fetchone() == (6,)
        assert con.execute("SELECT count(*) FROM cdrs WHERE rating_status IS NULL").fetchone() == (
            0,
        )


def test_rerate_replaces_amounts_priced_by_an_older_deck(
    env: Path, own_rates: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["generate"]) == 0
    assert main(["process"]) == 0
    query = (
        "SELECT sum(cost), count(DISTINCT deck_version) FROM cdrs WHERE carrier_id = 'carrier_001'"
    )
    with serving(env) as con:
        cost_before, versions = con.execute(query).fetchone() or (None, None)
    assert versions == 1 and cost_before > 0
    deck = own_rates / "cost" / "carrier_001.csv"
    deck.write_text(deck.read_text().replace(",0.01,", ",0.02,"))  # local rate doubles
    assert main(["rerate"]) == 0
    with serving(env) as con:
        cost_after, versions = con.execute(query).fetchone() or (None, None)
        assert con.execute("SELECT count(*) FROM cdrs").fetchone() == (1455,)
    assert versions == 1 and cost_after > cost_before
    capsys.readouterr()
    assert main(["rerate"]) == 0
    assert "every batch is priced by the current decks" in capsys.readouterr().err


def test_export_writes_the_calls_of_a_date_range(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["generate"]) == 0
    assert main(["process"]) == 0
    with serving(env) as con:
        [(first, last)] = con.execute("SELECT min(call_date), max(call_date) FROM cdrs").fetchall()
        [(last_day_calls,)] = con.execute(
            "SELECT count(*) FROM cdrs WHERE call_date = $d", {"d": last}
        ).fetchall()
        of_carrier = con.execute(
            "SELECT count(*) FROM cdrs WHERE carrier_id = 'carrier_002' AND country_code = 'US'"
        ).fetchone()
    capsys.readouterr()
    out = env / "last_day.csv"
    args = ["export", "--format", "csv", "--start-date", str(last), "--end-date", str(last)]
    assert main([*args, "--output", str(out)]) == 0
    assert f"wrote {last_day_calls} rows to {out}" in capsys.readouterr().out
    assert len(out.read_text().splitlines()) == last_day_calls + 1  # and the header

    out = env / "carrier.parquet"
    args = ["export", "--format", "parquet", "--start-date", str(first), "--end-date", str(last)]
    filters = ["--carrier-id", "carrier_002", "--country-code", "US"]
    assert main([*args, *filters, "--output", str(out)]) == 0
    assert duckdb.read_parquet(str(out)).count("*").fetchall() == [of_carrier]


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("2026-02-30", "2026-03-01", "--start-date '2026-02-30' is not a date (YYYY-MM-DD)"),
        ("2026-11-01", "2026/11/02", "--end-date '2026/11/02' is not a date (YYYY-MM-DD)"),
        ("20261101", "2026-11-02", "--start-date '20261101' is not a date (YYYY-MM-DD)"),
        ("2026-11-03", "2026-11-02", "--start-date 2026-11-03 is after --end-date 2026-11-02"),
    ],
)
def test_export_refuses_bad_dates(
    env: Path, capsys: pytest.CaptureFixture[str], start: str, end: str, message: str
) -> None:
    out = env / "out.json"
    args = ["export", "--format", "json", "--start-date", start, "--end-date", end]
    assert main([*args, "--output", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_export_refuses_bad_arguments_and_writes_a_header_on_an_empty_warehouse(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dates = ["--start-date", "2026-11-01", "--end-date", "2026-11-30"]
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--format", "xlsx", *dates, "--output", str(env / "x")])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["export", *dates, "--output", str(env / "x")])  # no --format
    assert exit_info.value.code == 2
    missing = env / "no_such_folder" / "out.csv"
    assert main(["export", "--format", "csv", *dates, "--output", str(missing)]) == 2
    assert "does not exist" in capsys.readouterr().err

    out = env / "empty.csv"
    assert main(["export", "--format", "csv", *dates, "--output", str(out)]) == 0
    assert "wrote 0 rows" in capsys.readouterr().out
    assert out.read_text().startswith("call_id,call_date,start_time,")
    assert len(out.read_text().splitlines()) == 1


def test_retention_lists_then_deletes_cdrs_days_past_the_window_and_keeps_the_marts(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["generate"]) == 0
    assert main(["process"]) == 0
    with serving(env) as con:
        days = [
            str(d)
            for (d,) in con.execute("SELECT DISTINCT call_date FROM cdrs ORDER BY 1").fetchall()
        ]
    capsys.readouterr()
    monkeypatch.setenv("CDR_RETENTION_CDRS_DAYS", "1")
    cut = date.today() - timedelta(days=1)
    expired = [d for d in days if date.fromisoformat(d) < cut]
    assert expired, "the sample should hold days before yesterday"
    assert main(["retention", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run, nothing deleted" in out and f"{len(expired)} days" in out
    with serving(env) as con:
        assert con.execute("SELECT count(DISTINCT call_date) FROM cdrs").fetchone() == (len(days),)

    assert main(["retention"]) == 0
    assert f"{len(expired)} days" in capsys.readouterr().out
    with serving(env) as con:
        kept = [
            str(d)
            for (d,) in con.execute("SELECT DISTINCT call_date FROM cdrs ORDER BY 1").fetchall()
        ]
        assert kept == [d for d in days if d not in expired]
        # The marts of the deleted days stay (kept forever by default).
        assert con.execute("SELECT count(*) FROM daily_summary").fetchone() == (len(days),)
