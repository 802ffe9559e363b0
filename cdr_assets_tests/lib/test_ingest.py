"""The batch steps end to end: nothing lost, first landing wins, re-runs change nothing."""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest

from cdr_assets.lib import enrichment, ingest, validation
from cdr_assets.lib.numbers import NumberFactsCache
from cdr_assets.lib.serving import publish_serving_file
from cdr_assets.lib.settings import Settings
from cdr_assets.lib.warehouse import Warehouse

SHIPPED_RATES = Path(__file__).resolve().parents[2] / "rates"
HEADER = (
    "call_id,caller_number,called_number,start_time,end_time,duration_seconds,"
    "carrier_id,call_type,country_code,disposition\n"
)


def line(call_id: str, start: str = "2026-11-20T10:00:00Z", duration: str = "60", **kw: str) -> str:
    values = {
        "caller_number": "+12025550123",
        "called_number": "+442079460958",
        "end_time": "",
        "carrier_id": "carrier_001",
        "call_type": "",
        "country_code": "",
        "disposition": "ANSWERED",
        **kw,
    }
    return (
        f"{call_id},{values['caller_number']},{values['called_number']},{start},"
        f"{values['end_time']},{duration},{values['carrier_id']},{values['call_type']},"
        f"{values['country_code']},{values['disposition']}\n"
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "landing").mkdir()
    return Settings(
        landing_dir=tmp_path / "landing",
        rates_dir=SHIPPED_RATES,
        warehouse_dir=tmp_path / "warehouse",
    )


def drop(settings: Settings, name: str, text: str) -> None:
    (settings.landing_dir / name).write_text(text, encoding="utf-8")


def run_batch(settings: Settings, batch_id: str, files: list[str] | None = None) -> None:
    warehouse = Warehouse(settings.warehouse_dir)
    names = files if files is not None else sorted(os.listdir(settings.landing_dir))
    ingest.read_batch_files(settings, warehouse, batch_id, names)
    ingest.validate_batch_files(settings, warehouse, batch_id)
    ingest.rate_batch(settings, warehouse, batch_id)
    ingest.enrich_batch(settings, warehouse, batch_id)
    ingest.deduplicate_batch(warehouse, batch_id)
    warehouse.mark_deduplicated(batch_id)  # as the asset does after the marts and alerts
    publish_serving_file(warehouse)


def query(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    path = Warehouse(settings.warehouse_dir).serving_path
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql).fetchall()


def snapshot(settings: Settings) -> dict[str, list[tuple[Any, ...]]]:
    """Every contract table's content, without the columns that record when a run happened."""
    return {
        "cdrs": query(settings, "SELECT * FROM cdrs ORDER BY call_id"),
        "rejected_cdrs": query(
            settings, "SELECT * FROM rejected_cdrs ORDER BY source_file, source_row"
        ),
        "duplicate_cdrs": query(
            settings, "SELECT * FROM duplicate_cdrs ORDER BY source_file, source_row"
        ),
        "landed_files": query(
            settings,
            "SELECT * EXCLUDE (landed_at) FROM landed_files ORDER BY batch_seq, source_file",
        ),
    }


def test_rules_a_chunk_and_numbers_a_slice_at_a_time_give_the_tables_of_one_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {
        "b.csv": HEADER + line("c1", duration="61") + line("c2") + line("c2") + line("c3"),
        "a.csv": HEADER + line("c1") + line("", duration="x") + line("c4", start="bad"),
        "c.csv": HEADER + line("c5", call_type="LOCAL") + line("c6", disposition="BUSY"),
    }
    monkeypatch.setenv("CDR_CALLER_HASH_KEY", "one key for both warehouses")
    snapshots = []
    checked: list[int] = []  # rows in each chunk the rules checked
    check = validation.find_row_failures

    def counted(parsed: Any, max_duration_seconds: int) -> Any:
        checked.append(parsed.height)
        return check(parsed, max_duration_seconds)

    monkeypatch.setattr(validation, "find_row_failures", counted)
    for name, chunk_rows in (("one", 1_000_000), ("chunked", 2)):
        checked.clear()
        (tmp_path / name / "landing").mkdir(parents=True)
        settings = Settings(
            landing_dir=tmp_path / name / "landing",
            rates_dir=SHIPPED_RATES,
            warehouse_dir=tmp_path / name / "warehouse",
        )
        for file, text in files.items():
            drop(settings, file, text)
        monkeypatch.setattr(validation, "RULE_CHUNK_ROWS", chunk_rows)
        monkeypatch.setattr(ingest, "FACTS_SLICE_NUMBERS", chunk_rows)
        run_batch(settings, "b1")
        snapshots.append(snapshot(settings))
        assert sum(checked) == 9 and max(checked) <= chunk_rows
    one, chunked = snapshots
    assert chunked == one
    assert (len(one["rejected_cdrs"]), len(one["cdrs"]), len(one["duplicate_cdrs"])) == (2, 5, 2)


def test_naive_times_are_read_in_the_source_zone_and_stored_as_utc(tmp_path: Path) -> None:
    (tmp_path / "landing").mkdir()
    berlin = Settings(
        landing_dir=tmp_path / "landing",
        rates_dir=SHIPPED_RATES,
        warehouse_dir=tmp_path / "warehouse",
        source_timezone="Europe/Berlin",
    )
    drop(
        berlin,
        "a.csv",
        HEADER
        + line("naive", start="2026-11-20T00:30:00")  # 23:30 UTC the day before
        + line("offset", start="2026-11-20T00:30:00Z")
        + line("naive end", start="2026-11-20 00:30:00", duration="", end_time="2026-11-20 00:31"),
    )
    run_batch(berlin, "b1")
    rows = query(
        berlin,
        "SELECT call_id, strftime(timezone('UTC', start_time), '%Y-%m-%d %H:%M'), "
        "CAST(call_date AS VARCHAR), duration_seconds FROM cdrs ORDER BY call_id",
    )
    assert rows == [
        ("naive", "2026-11-19 23:30", "2026-11-19", 60),
        ("naive end", "2026-11-19 23:30", "2026-11-19", 60),
        ("offset", "2026-11-20 00:30", "2026-11-20", 60),
    ]


def test_nothing_is_lost_and_first_landing_wins(settings: Settings) -> None:
    drop(settings, "b.csv", HEADER + line("c1", duration="61") + line("c2") + line("c2"))
    drop(settings, "a.csv", HEADER + line("c1") + line("", duration="x"))
    run_batch(settings, "b1")

    files = query(
        settings,
        "SELECT source_file, status, rows_read, rows_accepted, rows_rejected, rows_duplicate "
        "FROM landed_files ORDER BY source_file",
    )
    assert files == [("a.csv", "processed", 2, 1, 1, 0), ("b.csv", "processed", 3, 3, 0, 2)]
    # a.csv lands before b.csv (name order): its c1 is kept, b.csv's c1 is a changed copy.
    assert query(
        settings, "SELECT call_id, source_file, duration_seconds FROM cdrs ORDER BY 1"
    ) == [
        ("c1", "a.csv", 60),
        ("c2", "b.csv", 60),
    ]
    assert query(
        settings,
        "SELECT call_id, source_file, source_row, first_source_file, identical "
        "FROM duplicate_cdrs ORDER BY source_file, source_row",
    ) == [("c1", "b.csv", 1, "a.csv", False), ("c2", "b.csv", 3, "b.csv", True)]
    assert query(settings, "SELECT reasons FROM rejected_cdrs") == [
        (["missing_field:call_id", "invalid_duration"],)
    ]


def test_a_replayed_file_counts_nothing_twice(settings: Settings) -> None:
    content = HEADER + line("c1") + line("c2", duration="1.5") + line("c3")
    drop(settings, "day1.csv", content)
    run_batch(settings, "b1")
    drop(settings, "day1-again.csv", content)
    run_batch(settings, "b2")

    assert query(settings, "SELECT count(*) FROM cdrs") == [(2,)]
    assert query(
        settings,
        "SELECT count(*), bool_and(identical), min(first_source_file) FROM duplicate_cdrs",
    ) == [(2, True, "day1.csv")]
    assert query(settings, "SELECT source_file, source_row FROM rejected_cdrs ORDER BY 1") == [
        ("day1-again.csv", 2),
        ("day1.csv", 2),
    ]
    assert query(
        settings, "SELECT replay_of FROM landed_files WHERE source_file = 'day1-again.csv'"
    ) == [("day1.csv",)]


def test_a_late_cdr_lands_in_its_own_day(settings: Settings) -> None:
    drop(settings, "today.csv", HEADER + line("c1", start="2026-11-20T10:00:00Z"))
    run_batch(settings, "b1")
    drop(settings, "late.csv", HEADER + line("c0", start="2026-10-02T23:59:59Z"))
    run_batch(settings, "b2")
    warehouse = Warehouse(settings.warehouse_dir)
    assert warehouse.cdrs_days() == ["2026-10-02", "2026-11-20"]
    assert query(settings, "SELECT call_id, CAST(call_date AS VARCHAR) FROM cdrs ORDER BY 2") == [
        ("c0", "2026-10-02"),
        ("c1", "2026-11-20"),
    ]


def test_rerunning_any_step_of_any_batch_changes_nothing(settings: Settings) -> None:
    drop(settings, "a.csv", HEADER + line("c1") + line("c2") + line("bad", duration="-1"))
    run_batch(settings, "b1")
    drop(settings, "b.csv", HEADER + line("c2", duration="90") + line("c3"))
    run_batch(settings, "b2")
    before = snapshot(settings)

    warehouse = Warehouse(settings.warehouse_dir)
    # The files have left the landing folder; re-runs read them from the archive.
    assert not list(settings.landing_dir.iterdir())
    run_batch(settings, "b1", files=[])
    run_batch(settings, "b2", files=[])
    for day in warehouse.cdrs_days():
        ingest.rebuild_cdrs_day(warehouse, day)
    publish_serving_file(warehouse)
    assert snapshot(settings) == before


def test_landing_order_is_the_order_batches_were_deduplicated(settings: Settings) -> None:
    warehouse = Warehouse(settings.warehouse_dir)
    drop(settings, "x.csv", HEADER + line("c1", duration="10"))
    ingest.read_batch_files(settings, warehouse, "z-late-key", ["x.csv"])
    drop(settings, "y.csv", HEADER + line("c1", duration="20"))
    ingest.read_batch_files(settings, warehouse, "a-early-key", ["y.csv"])
    for batch in ("z-late-key", "a-early-key"):
        ingest.validate_batch_files(settings, warehouse, batch)
        ingest.rate_batch(settings, warehouse, batch)
        ingest.enrich_batch(settings, warehouse, batch)
        ingest.deduplicate_batch(warehouse, batch)
    publish_serving_file(warehouse)
    assert query(settings, "SELECT source_file, duration_seconds FROM cdrs") == [("x.csv", 10)]
    assert query(settings, "SELECT source_file, first_source_file FROM duplicate_cdrs") == [
        ("y.csv", "x.csv")
    ]


def test_unreadable_files_are_recorded_moved_aside_and_do_not_block(settings: Settings) -> None:
    (settings.landing_dir / "broken.csv.gz").write_bytes(gzip.compress(b"call_id\n1\n")[:12])
    (settings.landing_dir / "latin1.csv").write_bytes(HEADER.encode() + "é,\n".encode("latin-1"))
    (settings.landing_dir / "notes.xlsx").write_bytes(b"PK\x03\x04")
    outside = settings.landing_dir.parent / "secret.csv"
    outside.write_text(HEADER + line("secret"))
    (settings.landing_dir / "link.csv").symlink_to(outside)
    drop(settings, "-rf.csv", HEADER + line("dash"))
    drop(settings, "good.csv", HEADER + line("c1"))
    run_batch(settings, "b1")

    files = dict(
        query(settings, "SELECT source_file, status FROM landed_files ORDER BY source_file")
    )
    assert files == {
        "-rf.csv": "rejected",
        "broken.csv.gz": "rejected",
        "good.csv": "processed",
        "latin1.csv": "rejected",
        "link.csv": "rejected",
        "notes.xlsx": "rejected",
    }
    rejected = query(
        settings,
        "SELECT source_file, rows_read, rows_accepted, rows_rejected, error FROM landed_files "
        "WHERE status = 'rejected' ORDER BY source_file",
    )
    for name, rows_read, accepted, refused, error in rejected:
        assert (rows_read, accepted, refused) == (0, 0, 0)
        assert error.startswith(f"{name}: ")
    assert "symbolic link" in dict((r[0], r[4]) for r in rejected)["link.csv"]
    assert query(settings, "SELECT call_id FROM cdrs") == [("c1",)]
    assert outside.read_text().endswith(line("secret"))  # never followed, never moved
    moved = Warehouse(settings.warehouse_dir).rejected_files_dir("b1")
    assert (moved / "link.csv").is_symlink()
    assert (moved / "broken.csv.gz.error.txt").read_text().startswith("broken.csv.gz: ")
    assert sorted(os.listdir(settings.landing_dir)) == []


def test_a_reader_holding_the_serving_file_sees_a_consistent_snapshot(settings: Settings) -> None:
    drop(settings, "a.csv", HEADER + line("c1"))
    run_batch(settings, "b1")
    path = Warehouse(settings.warehouse_dir).serving_path
    with duckdb.connect(str(path), read_only=True) as reader:
        drop(settings, "b.csv", HEADER + line("c2"))
        run_batch(settings, "b2")  # does not wait for, or fail because of, the reader
        assert reader.execute("SELECT count(*) FROM cdrs").fetchone() == (1,)
    assert query(settings, "SELECT count(*) FROM cdrs") == [(2,)]


def test_header_only_file_is_processed_with_zero_rows(settings: Settings) -> None:
    drop(settings, "empty-day.csv", HEADER)
    drop(settings, "nothing.csv", "")
    run_batch(settings, "b1")
    assert query(
        settings, "SELECT source_file, status, rows_read FROM landed_files ORDER BY 1"
    ) == [("empty-day.csv", "processed", 0), ("nothing.csv", "rejected", 0)]


def test_the_worked_example_is_priced_exactly_in_cdrs(settings: Settings) -> None:
    # rating.md: 330 s international to +44 on carrier_001 bills 360 s, costs 0.2400, earns
    # 0.3600 with the shipped decks (60/60, markup 1.5).
    drop(settings, "a.csv", HEADER + line("c1", duration="330", call_type="international"))
    run_batch(settings, "b1")
    row = query(
        settings,
        "SELECT billable_seconds, rate_prefix, CAST(cost AS VARCHAR), CAST(revenue AS VARCHAR),"
        " CAST(margin AS VARCHAR), rating_status, typeof(cost), typeof(revenue) FROM cdrs",
    )
    assert row == [(360, "44", "0.2400", "0.3600", "0.1200", "rated", *["DECIMAL(38,4)"] * 2)]


def test_rerunning_a_batch_reads_its_own_archived_file_not_a_newer_namesake(
    settings: Settings,
) -> None:
    drop(settings, "a.csv", HEADER + line("c1"))
    run_batch(settings, "b1")
    before = snapshot(settings)
    drop(settings, "a.csv", HEADER + line("c9"))  # a new file under the same name
    run_batch(settings, "b1", files=[])
    assert snapshot(settings) == before
    assert (settings.landing_dir / "a.csv").exists()  # left for the next batch


def test_the_enriched_layer_is_each_numbers_facts_joined_into_cdrs(settings: Settings) -> None:
    drop(
        settings,
        "a.csv",
        HEADER
        + line("e1")
        + line("e2", caller_number="+447700900123", called_number="+12025550123")
        + line("e3", caller_number="", called_number="+442079460958")
        + line("e4", caller_number="+33612345678", called_number="+447700900123"),
    )
    run_batch(settings, "b1")
    warehouse = Warehouse(settings.warehouse_dir)
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        enriched = f"read_parquet('{warehouse.batch_file('enriched', 'b1')}')"
        rows = con.execute(f"SELECT e164 FROM {enriched} ORDER BY 1").fetchall()
        columns = con.execute(f"SELECT * FROM {enriched} LIMIT 0").description
        # One row per number the calls use: the layer is the facts, not the calls.
        assert [r[0] for r in rows] == sorted(
            ["+12025550123", "+442079460958", "+447700900123", "+33612345678"]
        )
        assert [c[0] for c in columns] == [
            "e164", "number_type", "description", "carrier_name", "timezones",
        ]  # fmt: skip
        # cdrs: the rated rows with those facts joined, as enrich_calls gives them in one go.
        cache = NumberFactsCache(warehouse.number_facts_dir, settings.default_region)
        con.execute(
            "CREATE TEMP VIEW rated AS SELECT * FROM "
            f"read_parquet('{warehouse.batch_file('rated', 'b1')}')"
        )
        source = cache.source_sql()
        assert source is not None
        names = ", ".join(enrichment.ENRICHMENT_COLUMNS)
        expected = (
            enrichment.enrich_calls(con, "rated", source)
            .query("e", f"SELECT call_id, {names} FROM e ORDER BY call_id")
            .fetchall()
        )
    got = query(settings, f"SELECT call_id, {names} FROM cdrs ORDER BY call_id")
    assert got == expected and len(got) == 4
    assert got[2][0] == "e3" and got[2][5] is None  # no caller, no caller facts


def test_a_batch_enriched_by_an_earlier_release_gives_the_same_cdrs(settings: Settings) -> None:
    drop(
        settings,
        "a.csv",
        HEADER
        + line("w1")
        + line("w2", caller_number="+447700900123", start="2026-11-21T23:30:00Z")
        + line("w3", caller_number=""),
    )
    run_batch(settings, "b1")
    before = snapshot(settings)
    warehouse = Warehouse(settings.warehouse_dir)
    # The layout of earlier releases: the enriched layer held the wide rows, as cdrs does.
    cache = NumberFactsCache(warehouse.number_facts_dir, settings.default_region)
    source = cache.source_sql()
    assert source is not None
    with duckdb.connect() as con:
        con.execute(
            "CREATE TEMP VIEW rated AS SELECT * FROM "
            f"read_parquet('{warehouse.batch_file('rated', 'b1')}')"
        )
        wide = enrichment.enrich_calls(con, "rated", source).to_arrow_table()
    pq.write_table(wide, warehouse.batch_file("enriched", "b1"))
    for day in warehouse.cdrs_days():
        warehouse.cdrs_file(day, "b1").unlink()
        assert ingest.rebuild_cdrs_day(warehouse, day) > 0
    publish_serving_file(warehouse)
    assert snapshot(settings) == before


def test_files_read_by_a_pool_of_processes_give_the_tables_of_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def landed(folder: str) -> Settings:
        settings = Settings(
            landing_dir=tmp_path / folder / "landing",
            rates_dir=SHIPPED_RATES,
            warehouse_dir=tmp_path / folder / "warehouse",
        )
        settings.landing_dir.mkdir(parents=True)
        for n in range(5):  # good rows, a malformed record, a refused row, in each file
            drop(
                settings,
                f"f{n}.csv",
                HEADER + line(f"c{n}") + "x,y\n" + line(f"d{n}", duration="-1"),
            )
        (settings.landing_dir / "latin1.csv").write_bytes(
            HEADER.encode() + "é,\n".encode("latin-1")
        )
        drop(settings, "empty.csv", "")
        return settings

    monkeypatch.setenv("CDR_CALLER_HASH_KEY", "one key for both warehouses")
    one = landed("one")
    run_batch(one, "b1")
    monkeypatch.setattr(ingest, "PARALLEL_READ_BYTES", 0)  # every batch on every core
    read_by_pool: list[int] = []
    submit = ingest.ProcessPoolExecutor.submit

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        read_by_pool.append(1)
        return submit(self, *args, **kwargs)

    monkeypatch.setattr(ingest.ProcessPoolExecutor, "submit", counted)
    pool = landed("pool")
    run_batch(pool, "b1")
    assert len(read_by_pool) == 7  # every file with a safe name (refused ones too)
    assert snapshot(pool) == snapshot(one)
    raw = [pq.read_table(Warehouse(s.warehouse_dir).batch_file("raw", "b1")) for s in (one, pool)]
    assert raw[0].num_rows == 15 and raw[0].equals(raw[1])


def test_a_refused_row_carries_its_line_whether_raw_kept_it_or_left_it_implied(
    settings: Settings,
) -> None:
    """``raw`` leaves a canonical CSV record implied (null) when its fields give it back;
    ``rejected_cdrs.raw_record`` is the line as it was in the file either way."""
    plain = [line("p1", duration="x"), line("", duration="60"), "broken,line\n"]
    spaced = [line(" s1", duration="x"), line("s2", start="bad")]
    drop(settings, "plain.csv", HEADER + line("ok1") + "".join(plain))
    drop(settings, "spaced.csv", HEADER + line("ok2") + "".join(spaced))
    run_batch(settings, "b1")
    raw = pq.read_table(Warehouse(settings.warehouse_dir).batch_file("raw", "b1"))
    kept = {
        (row["source_file"], row["source_row"]): row["raw_record"]
        for row in raw.select(["source_file", "source_row", "raw_record"]).to_pylist()
    }
    # plain.csv: only the malformed record is kept; spaced.csv has a value that is stripped.
    assert [k for k, v in kept.items() if v is not None] == [
        ("plain.csv", 4),
        ("spaced.csv", 1),
        ("spaced.csv", 2),
        ("spaced.csv", 3),
    ]
    refused = query(
        settings, "SELECT source_file, source_row, raw_record FROM rejected_cdrs ORDER BY 1, 2"
    )
    assert refused == [
        ("plain.csv", 2, plain[0].rstrip("\n")),
        ("plain.csv", 3, plain[1].rstrip("\n")),
        ("plain.csv", 4, "broken,line"),
        ("spaced.csv", 2, spaced[0].rstrip("\n")),
        ("spaced.csv", 3, spaced[1].rstrip("\n")),
    ]
