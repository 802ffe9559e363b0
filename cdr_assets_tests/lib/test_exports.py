"""Exports: ad hoc files of a date range, and the monthly billing files per carrier."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cdr_assets.lib.exports import (
    EXPORT_COLUMNS,
    MONEY_COLUMNS,
    BillingTotals,
    billing_dir,
    carrier_file_stem,
    export_calls,
    read_billing_totals,
    write_billing_month,
)
from cdr_assets.lib.generate import generate_sample
from cdr_assets.lib.settings import Settings
from cdr_assets.lib.warehouse import Warehouse
from cdr_assets_tests.lib.test_ingest import HEADER, SHIPPED_RATES, drop, line, query, run_batch

# The sample's three days are 2026-11-29, 2026-11-30 and 2026-12-01: two months.
TODAY = date(2026, 12, 2)
FORMULA_CALLS = ("=1+2", "@SUM(1)", "-5")


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A warehouse built by the real batch steps from the sample plus a few crafted calls."""
    root = tmp_path_factory.mktemp("exports")
    settings = Settings(
        landing_dir=root / "landing", rates_dir=SHIPPED_RATES, warehouse_dir=root / "warehouse"
    )
    generate_sample(settings.landing_dir, seed=7, today=TODAY)
    crafted = "".join(
        line(call_id, start="2026-11-30T12:00:00Z", duration="330") for call_id in FORMULA_CALLS
    )
    # A carrier that only has calls in October: it gets no November files.
    crafted += line("oct-1", start="2026-10-15T09:00:00Z", carrier_id="carrier_009")
    drop(settings, "zz_crafted.csv", HEADER + crafted)
    run_batch(settings, "b1")
    return settings


@pytest.fixture(scope="module")
def warehouse(settings: Settings) -> Warehouse:
    return Warehouse(settings.warehouse_dir)


def count(settings: Settings, where: str) -> int:
    return int(query(settings, f"SELECT count(*) FROM cdrs WHERE {where}")[0][0])


def read_back(path: Path, fmt: str) -> duckdb.DuckDBPyRelation:
    if fmt == "csv":
        return duckdb.read_csv(str(path), header=True, all_varchar=True)
    if fmt == "json":
        return duckdb.read_json(str(path), format="newline_delimited")
    return duckdb.read_parquet(str(path))


FILTERS: list[tuple[dict[str, Any], str]] = [
    ({}, "true"),
    ({"carrier_id": "carrier_002"}, "carrier_id = 'carrier_002'"),
    ({"country_code": "GB"}, "country_code = 'GB'"),
    ({"country_code": "gb"}, "country_code = 'GB'"),
    (
        {"carrier_id": "carrier_001", "country_code": "US"},
        "carrier_id = 'carrier_001' AND country_code = 'US'",
    ),
    ({"carrier_id": "no_such_carrier"}, "false"),
]


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_row_counts_follow_the_filters(
    settings: Settings, warehouse: Warehouse, tmp_path: Path, fmt: str
) -> None:
    start, end = date(2026, 11, 29), date(2026, 12, 1)
    for kwargs, where in FILTERS:
        out = tmp_path / f"calls.{fmt}"
        written = export_calls(warehouse, out, fmt, start, end, **kwargs)
        expected = count(settings, f"call_date >= DATE '2026-11-29' AND {where}")
        assert written == expected, kwargs
        assert read_back(out, fmt).count("*").fetchall() == [(expected,)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"calls.{fmt}"]  # no temporary left


def test_the_date_range_is_inclusive_and_ordered(
    settings: Settings, warehouse: Warehouse, tmp_path: Path
) -> None:
    out = tmp_path / "calls.parquet"
    day = date(2026, 11, 30)
    assert export_calls(warehouse, out, "parquet", day, day) == count(
        settings, "call_date = DATE '2026-11-30'"
    )
    assert export_calls(warehouse, out, "parquet", day, date(2026, 12, 1)) == count(
        settings, "call_date BETWEEN DATE '2026-11-30' AND DATE '2026-12-01'"
    )
    table = pq.read_table(out)
    assert table.column_names == list(EXPORT_COLUMNS)
    keys = list(
        zip(
            table["call_date"].to_pylist(),
            table["start_time"].to_pylist(),
            table["call_id"].to_pylist(),
            strict=True,
        )
    )
    assert keys == sorted(keys)


def test_decimals_are_exact_in_every_format(
    settings: Settings, warehouse: Warehouse, tmp_path: Path
) -> None:
    money = sorted(MONEY_COLUMNS)
    truth = {
        row[0]: tuple(row[1:])
        for row in query(
            settings,
            f"SELECT call_id, {', '.join(money)} FROM cdrs WHERE call_date >= '2026-11-29'",
        )
    }
    start, end = date(2026, 11, 29), date(2026, 12, 1)
    assert any(v is not None and v != v.to_integral_value() for t in truth.values() for v in t)

    def as_decimals(values: tuple[Any, ...]) -> tuple[Decimal | None, ...]:
        return tuple(None if v in (None, "") else Decimal(v) for v in values)

    export_calls(warehouse, tmp_path / "c.parquet", "parquet", start, end)
    parquet = pq.read_table(tmp_path / "c.parquet")
    for name in money:
        assert pa.types.is_decimal(parquet.schema.field(name).type)
    rows = parquet.select(["call_id", *money]).to_pylist()
    assert {r["call_id"]: tuple(r[m] for m in money) for r in rows} == truth

    export_calls(warehouse, tmp_path / "c.json", "json", start, end)
    objects = [json.loads(text) for text in (tmp_path / "c.json").read_text().splitlines()]
    assert all(isinstance(o[m], str) for o in objects for m in money if o[m] is not None)
    assert {o["call_id"]: as_decimals(tuple(o[m] for m in money)) for o in objects} == truth
    cost = {o["call_id"]: o["cost"] for o in objects}
    assert cost["=1+2"] == "0.2400"  # the worked example: 330 s to +44 on carrier_001

    export_calls(warehouse, tmp_path / "c.csv", "csv", start, end)
    csv_rows = read_back(tmp_path / "c.csv", "csv").select(", ".join(["call_id", *money]))
    from_csv = {r[0]: as_decimals(r[1:]) for r in csv_rows.fetchall()}
    assert from_csv.pop("'=1+2") == truth.pop("=1+2")
    assert from_csv.pop("'@SUM(1)") == truth.pop("@SUM(1)")
    assert from_csv.pop("'-5") == truth.pop("-5")
    assert from_csv == truth
    # The decimal text keeps its scale: 0.2400, not 0.24 nor 0.23999999.
    assert "0.2400" in (tmp_path / "c.csv").read_text()


def test_csv_neutralises_formula_cells_and_other_formats_keep_them(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    day = date(2026, 11, 30)
    export_calls(warehouse, tmp_path / "c.csv", "csv", day, day, carrier_id="carrier_001")
    rows = (
        read_back(tmp_path / "c.csv", "csv")
        .filter("source_file = 'zz_crafted.csv'")
        .select("call_id, caller_number, called_number")
        .order("call_id")
        .fetchall()
    )
    assert rows == [
        ("'-5", "'+12025550123", "'+442079460958"),
        ("'=1+2", "'+12025550123", "'+442079460958"),
        ("'@SUM(1)", "'+12025550123", "'+442079460958"),
    ]
    for fmt in ("json", "parquet"):
        export_calls(warehouse, tmp_path / f"c.{fmt}", fmt, day, day, carrier_id="carrier_001")
        kept = (
            read_back(tmp_path / f"c.{fmt}", fmt)
            .filter("source_file = 'zz_crafted.csv'")
            .select("call_id, caller_number")
            .order("call_id")
            .fetchall()
        )
        assert kept == [(c, "+12025550123") for c in sorted(FORMULA_CALLS)]


def test_an_empty_range_writes_an_empty_file_of_the_right_shape(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    first, last = date(2020, 1, 1), date(2020, 1, 31)
    assert export_calls(warehouse, tmp_path / "e.csv", "csv", first, last) == 0
    assert (tmp_path / "e.csv").read_text() == ",".join(EXPORT_COLUMNS) + "\n"
    assert export_calls(warehouse, tmp_path / "e.json", "json", first, last) == 0
    assert (tmp_path / "e.json").read_bytes() == b""
    assert export_calls(warehouse, tmp_path / "e.parquet", "parquet", first, last) == 0
    table = pq.read_table(tmp_path / "e.parquet")
    assert table.num_rows == 0 and table.column_names == list(EXPORT_COLUMNS)
    assert pa.types.is_decimal(table.schema.field("cost").type)


def test_bad_arguments_are_refused(warehouse: Warehouse, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    with pytest.raises(ValueError, match="after end date"):
        export_calls(warehouse, out, "csv", date(2026, 12, 1), date(2026, 11, 30))
    with pytest.raises(ValueError, match="format must be one of"):
        export_calls(warehouse, out, "xlsx", date(2026, 11, 30), date(2026, 11, 30))
    for month in ("2026-13", "2026-1", "26-11", "2026-11-01", "../2026-11"):
        with pytest.raises(ValueError, match="month must be YYYY-MM"):
            write_billing_month(warehouse, month)
    assert not out.exists()


# -- billing ------------------------------------------------------------------------------------


def expected_totals(settings: Settings, month: str) -> dict[str, BillingTotals]:
    rows = query(
        settings,
        "SELECT carrier_id, count(*), coalesce(sum(billable_seconds), 0), "
        "coalesce(sum(retail_billable_seconds), 0), coalesce(sum(cost), 0), "
        "coalesce(sum(revenue), 0), coalesce(sum(margin), 0) FROM cdrs "
        f"WHERE strftime(call_date, '%Y-%m') = '{month}' GROUP BY 1",
    )
    return {r[0]: BillingTotals(*r[1:]) for r in rows}


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_billing_totals_equal_the_sums_over_cdrs(settings: Settings, warehouse: Warehouse) -> None:
    for month in ("2026-11", "2026-12", "2026-10"):
        expected = expected_totals(settings, month)
        assert write_billing_month(warehouse, month) == expected
        assert read_billing_totals(warehouse, month) == expected
        folder = billing_dir(warehouse, month)
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            f"{carrier}.{suffix}" for carrier in expected for suffix in ("csv", "json")
        )
        for carrier, totals in expected.items():
            csv_rows = read_back(folder / f"{carrier}.csv", "csv").select("call_id, calls")
            csv_rows = csv_rows.fetchall()
            assert len(csv_rows) == totals.calls + 1
            assert csv_rows[-1] == ("TOTAL", str(totals.calls))
            assert all(calls is None for _, calls in csv_rows[:-1])
            document = json.loads((folder / f"{carrier}.json").read_text())
            assert document["carrier_id"] == carrier and document["month"] == month
            assert document["totals"] == {
                "calls": totals.calls,
                "billable_seconds": totals.billable_seconds,
                "retail_billable_seconds": totals.retail_billable_seconds,
                "cost": str(totals.cost),
                "revenue": str(totals.revenue),
                "margin": str(totals.margin),
            }
            assert len(document["calls"]) == totals.calls
            assert sum(Decimal(c["cost"]) for c in document["calls"] if c["cost"]) == totals.cost
    # Money is summed at its scale: the totals row reads 0.0000 or 56.3500, not a float.
    november = (billing_dir(warehouse, "2026-11") / "carrier_001.csv").read_text()
    total_line = november.splitlines()[-1].split(",")
    assert total_line[EXPORT_COLUMNS.index("cost")] == str(
        expected_totals(settings, "2026-11")["carrier_001"].cost
    )
    assert len(total_line[EXPORT_COLUMNS.index("cost")].split(".")[1]) == 4


def test_a_carrier_without_calls_in_the_month_gets_no_file(warehouse: Warehouse) -> None:
    november = write_billing_month(warehouse, "2026-11")
    assert "carrier_009" not in november
    assert not list(billing_dir(warehouse, "2026-11").glob("carrier_009.*"))
    assert set(write_billing_month(warehouse, "2026-10")) == {"carrier_009"}
    assert write_billing_month(warehouse, "2026-09") == {}
    assert read_billing_totals(warehouse, "2026-09") == {}
    assert list(billing_dir(warehouse, "2026-09").iterdir()) == []


def test_rewriting_a_month_gives_identical_files_and_drops_stale_ones(
    warehouse: Warehouse,
) -> None:
    write_billing_month(warehouse, "2026-11")
    folder = billing_dir(warehouse, "2026-11")
    before = folder_bytes(folder)
    (folder / "carrier_gone.csv").write_text("call_id\nTOTAL\n")
    (folder / "carrier_gone.json").write_text("{}")
    write_billing_month(warehouse, "2026-11")
    assert folder_bytes(folder) == before
    # Nothing temporary is left beside the month's folder, nor in the spill folder.
    assert [p.name for p in folder.parent.glob(".*") if p.name != ".lock"] == []
    assert list((warehouse.state_dir / "spill").iterdir()) == []


def test_carrier_ids_become_safe_reversible_file_names() -> None:
    assert carrier_file_stem("carrier_001") == "carrier_001"
    for carrier in ("../etc/passwd", "..", ".hidden", "-rf", "a/b", "x\ny", "é"):
        stem = carrier_file_stem(carrier)
        assert "/" not in stem and "\n" not in stem and stem[0] not in ".-~"
        assert unquote(stem) == carrier
    with pytest.raises(ValueError):
        carrier_file_stem("")


def test_a_long_carrier_id_gets_a_bounded_stem_of_its_prefix_and_hash() -> None:
    def digest(carrier: str) -> str:
        return hashlib.sha256(carrier.encode()).hexdigest()[:16]

    # Up to 200 bytes encoded, the stem is the whole encoded id; one byte more, and it is cut.
    assert carrier_file_stem("x" * 200) == "x" * 200
    assert carrier_file_stem("x" * 201) == "x" * 200 + "~" + digest("x" * 201)
    # Never cut inside a %XX: "é" is %C3%A9, and the 200th byte falls inside it.
    assert carrier_file_stem("a" * 199 + "é") == "a" * 199 + "~" + digest("a" * 199 + "é")
    long_ids = [
        "x" * 300,
        "x" * 299 + "y",  # the same first 200 bytes as the one before
        "x" * 10_000_000,
        "é" * 1000,
        "../" * 100,
        "-" + "z" * 300,
        "=" + "z" * 300,
    ]
    stems = [carrier_file_stem(carrier) for carrier in long_ids]
    for carrier, stem in zip(long_ids, stems, strict=True):
        assert carrier_file_stem(carrier) == stem  # the same id, the same stem
        assert stem.endswith("~" + digest(carrier))
        encoded = carrier_file_stem(carrier[:60])  # a short id: its whole encoded form
        assert stem.startswith(encoded[:50])
        assert 200 < len(stem.encode()) <= 217
        assert len(f".{stem}.totals.part".encode()) <= 255  # the longest name made from it
        assert re.fullmatch(r"[A-Za-z0-9_.~%-]+", stem) and stem[0] not in ".-~"
    assert len(set(stems)) == len(stems)
    # An id spelling a long id's stem does not get that stem: a whole encoded id is never
    # longer than 200 bytes, a shortened one always is, so the two kinds never meet.
    lookalike = unquote(stems[0])
    assert carrier_file_stem(lookalike) != stems[0]


def test_billing_files_of_long_carrier_ids_read_back_under_their_ids(tmp_path: Path) -> None:
    """Each long id gets its own files, and read_billing_totals gives their totals by id.

    One id passes DuckDB's 2 MB limit on a CSV line; one starts with a formula character, so
    its totals row reads ``'=...``, next to an id that really starts with ``'=``.
    """
    settings = Settings(
        landing_dir=tmp_path / "landing", rates_dir=SHIPPED_RATES, warehouse_dir=tmp_path / "w"
    )
    settings.landing_dir.mkdir()
    carriers = ["x" * 300, "x" * 299 + "y", "=" + "z" * 300, "'=" + "z" * 300, "c" * 3_000_000]
    calls = "".join(line(f"long-{n}", carrier_id=c) for n, c in enumerate(carriers))
    calls += line("long-x", carrier_id=carriers[0])
    drop(settings, "long.csv", HEADER + calls)
    run_batch(settings, "long")
    warehouse = Warehouse(settings.warehouse_dir)
    written = write_billing_month(warehouse, "2026-11")
    assert {c: t.calls for c, t in written.items()} == {c: 1 for c in carriers} | {carriers[0]: 2}
    assert read_billing_totals(warehouse, "2026-11") == written
    assert written == expected_totals(settings, "2026-11")
    folder = billing_dir(warehouse, "2026-11")
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"{carrier_file_stem(c)}.{suffix}" for c in carriers for suffix in ("csv", "json")
    )
