"""Tests for cdr_assets.lib.readers: the "Input files" part of the data contract."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import random
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cdr_assets.lib import readers
from cdr_assets.lib.readers import (
    CANONICAL_FIELDS,
    SUPPORTED_SUFFIXES,
    FileRejected,
    is_supported,
    read_landing_file,
)

HEADER = ",".join(CANONICAL_FIELDS)

# Two calls as every format writes them; the values are what every reader must return.
CALLS: list[dict[str, str]] = [
    {
        "call_id": "C1",
        "caller_number": "+442071234567",
        "called_number": "+33612345678",
        "start_time": "2026-01-05T10:00:00Z",
        "end_time": "2026-01-05T10:01:00Z",
        "duration_seconds": "60",
        "carrier_id": "CARR1",
        "call_type": "international",
        "country_code": "FR",
        "disposition": "ANSWERED",
    },
    {
        "call_id": "C2",
        "caller_number": "+442071234568",
        "called_number": "+442079876543",
        "start_time": "2026-01-05T11:00:00Z",
        "end_time": "2026-01-05T11:00:30Z",
        "duration_seconds": "30",
        "carrier_id": "CARR2",
        "call_type": "local",
        "country_code": "GB",
        "disposition": "BUSY",
    },
]


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def read(tmp_path: Path, name: str, data: bytes, **kwargs: Any) -> pa.Table:
    return read_landing_file(write(tmp_path, name, data), **kwargs)


def rejection(tmp_path: Path, name: str, data: bytes, **kwargs: Any) -> str:
    with pytest.raises(FileRejected) as caught:
        read(tmp_path, name, data, **kwargs)
    return str(caught.value)


def fields(table: pa.Table) -> list[dict[str, str | None]]:
    return [{name: row[name] for name in CANONICAL_FIELDS} for row in table.to_pylist()]


def column(table: pa.Table, name: str) -> list[Any]:
    return table.column(name).to_pylist()


def only_field(table: pa.Table, name: str) -> str | None:
    assert table.num_rows == 1
    return column(table, name)[0]


def csv_bytes(header: str, *lines: str, newline: str = "\n") -> bytes:
    return (newline.join([header, *lines]) + newline).encode("utf-8")


def calls_as(fmt: str) -> bytes:
    """CALLS written in one format, as a producer of landing files would write them."""
    if fmt == ".csv":
        return csv_bytes(HEADER, *(",".join(call.values()) for call in CALLS))
    if fmt == ".json":
        return json.dumps(CALLS).encode()
    if fmt in (".ndjson", ".jsonl"):
        return "".join(json.dumps(call) + "\n" for call in CALLS).encode()
    table = pa.Table.from_pylist(CALLS)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


# --- names and formats ----------------------------------------------------------------


def test_supported_suffixes_are_each_format_plain_and_gzipped() -> None:
    assert SUPPORTED_SUFFIXES == (
        ".csv",
        ".json",
        ".ndjson",
        ".jsonl",
        ".parquet",
        ".csv.gz",
        ".json.gz",
        ".ndjson.gz",
        ".jsonl.gz",
        ".parquet.gz",
    )


@pytest.mark.parametrize(
    ("name", "supported"),
    [
        ("calls.csv", True),
        ("CALLS.CSV", True),
        ("calls.json", True),
        ("calls.ndjson", True),
        ("calls.jsonl", True),
        ("calls.parquet", True),
        ("calls.csv.gz", True),
        ("calls.Jsonl.GZ", True),
        ("calls.parquet.gz", True),
        ("calls.2026-01-05.csv", True),
        ("calls.xlsx", False),
        ("calls.gz", False),
        ("calls.csv.zip", False),
        ("calls.txt", False),
        ("calls", False),
        ("csv", False),
    ],
)
def test_is_supported_by_suffix_in_any_case(name: str, supported: bool) -> None:
    assert is_supported(name) is supported


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("calls.xlsx", "unsupported format .xlsx"),
        ("calls.tar.gz", "unsupported format .tar.gz"),
        ("calls", "unsupported format (no file extension)"),
    ],
)
def test_unsupported_format_is_a_rejected_file(tmp_path: Path, name: str, reason: str) -> None:
    assert rejection(tmp_path, name, b"call_id\n1\n") == reason


def test_output_schema_is_fixed(tmp_path: Path) -> None:
    table = read(tmp_path, "calls.csv", calls_as(".csv"))
    assert table.schema.names == ["source_row", *CANONICAL_FIELDS, "raw_record", "malformed"]
    assert table.schema.field("source_row").type == pa.int64()
    assert all(table.schema.field(name).type == pa.string() for name in CANONICAL_FIELDS)
    assert table.schema.field("raw_record").type == pa.string()
    assert table.schema.field("malformed").type == pa.bool_()


@pytest.mark.parametrize("fmt", [".csv", ".json", ".ndjson", ".jsonl", ".parquet"])
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_every_format_plain_and_gzipped_gives_the_same_rows(
    tmp_path: Path, fmt: str, gz: bool
) -> None:
    data = calls_as(fmt)
    table = read(
        tmp_path, "calls" + fmt + (".gz" if gz else ""), gzip.compress(data) if gz else data
    )
    assert fields(table) == CALLS
    assert column(table, "source_row") == [1, 2]
    assert column(table, "malformed") == [False, False]


@pytest.mark.parametrize(
    ("fmt", "first_raw"),
    [
        (".csv", ",".join(CALLS[0].values())),
        (".json", json.dumps(CALLS[0], separators=(",", ":"))),
        (".ndjson", json.dumps(CALLS[0])),
        (".parquet", json.dumps(CALLS[0], separators=(",", ":"))),
    ],
)
def test_raw_record_per_format(tmp_path: Path, fmt: str, first_raw: str) -> None:
    table = read(tmp_path, "calls" + fmt, calls_as(fmt))
    assert column(table, "raw_record")[0] == first_raw


# --- encodings ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", [".csv", ".json", ".ndjson"])
@pytest.mark.parametrize(
    "encode",
    [
        lambda text: b"\xef\xbb\xbf" + text.encode("utf-8"),
        lambda text: text.encode("utf-16"),
        lambda text: b"\xff\xfe" + text.encode("utf-16-le"),
        lambda text: b"\xfe\xff" + text.encode("utf-16-be"),
    ],
    ids=["utf-8-bom", "utf-16-native-bom", "utf-16-le-bom", "utf-16-be-bom"],
)
def test_byte_order_marks_are_decoded(tmp_path: Path, fmt: str, encode: Any) -> None:
    text = calls_as(fmt).decode("utf-8").replace("CARR1", "Télécom ☎")
    table = read(tmp_path, "calls" + fmt, encode(text))
    assert column(table, "carrier_id") == ["Télécom ☎", "CARR2"]
    assert column(table, "call_id") == ["C1", "C2"]


@pytest.mark.parametrize("blank", [b"\r", b"\r\n", b"\n", b" \r"], ids=repr)
def test_blank_lines_before_the_header_end_as_the_csv_module_ends_lines(
    tmp_path: Path, blank: bytes
) -> None:
    # Found by the fuzz test: a lone CR before the header was read as an empty header.
    table = read(tmp_path, "calls.csv", blank + b"call_id,carrier_id\nC1,X\nC2\r")
    assert column(table, "call_id") == ["C1", None]
    assert column(table, "malformed") == [False, True]


@pytest.mark.parametrize("mark", [b"", b"\xef\xbb\xbf"], ids=["no-bom", "file-bom"])
def test_a_row_that_starts_with_a_byte_order_mark_is_a_row(tmp_path: Path, mark: bytes) -> None:
    # Found by the fuzz test: the first row after the header began with U+FEFF and was lost.
    table = read(tmp_path, "calls.csv", mark + b"call_id\n\xef\xbb\xbfC1\nC2\n")
    assert column(table, "call_id") == ["\ufeffC1", "C2"]
    assert column(table, "source_row") == [1, 2]


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        (
            "latin1.csv",
            "call_id,carrier_id\nC1,Télécom\n".encode("latin-1"),
            "not valid UTF-8 text (byte 0xe9 at offset 23)",
        ),
        (
            "latin1.json",
            '[{"carrier_id": "Télécom"}]'.encode("latin-1"),
            "not valid UTF-8 text (byte 0xe9 at offset 18)",
        ),
        (
            "utf16le.csv",
            "call_id,carrier_id\nC1,X\n".encode("utf-16-le"),
            "not valid UTF-8 text (byte 0x00 at offset 1; "
            "NUL bytes as in UTF-16 without a byte-order mark)",
        ),
        (
            "utf16be.ndjson",
            '{"call_id": "C1"}\n'.encode("utf-16-be"),
            "not valid UTF-8 text (byte 0x00 at offset 0; "
            "NUL bytes as in UTF-16 without a byte-order mark)",
        ),
        (
            "random.csv",
            b"call_id\n" + bytes([0x41, 0xFF, 0xFE, 0x80, 0x41]),
            "not valid UTF-8 text (byte 0xff at offset 9)",
        ),
        (
            "odd.csv",
            b"\xff\xfe" + "call_id\n".encode("utf-16-le") + b"\x41",
            "not valid UTF-16 text (truncated data at offset 18)",
        ),
    ],
)
def test_undecodable_text_is_a_rejected_file(
    tmp_path: Path, name: str, data: bytes, reason: str
) -> None:
    assert rejection(tmp_path, name, data) == reason


def test_random_bytes_are_refused_with_the_offset(tmp_path: Path) -> None:
    noise = random.Random(7).randbytes(5000)
    reason = rejection(tmp_path, "noise.csv", noise)
    assert reason.startswith("not valid UTF-8 text (byte 0x")
    assert " at offset " in reason


def test_invalid_utf8_far_into_a_large_file_names_its_offset(tmp_path: Path) -> None:
    head = csv_bytes("call_id", *(f"C{i:07d}" for i in range(3_000_000)))  # > one check chunk
    reason = rejection(tmp_path, "late.csv", head + b"\xc3(\n")
    assert reason == f"not valid UTF-8 text (byte 0xc3 at offset {len(head)})"


# --- empty files ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("empty.csv", b""),
        ("empty.csv.gz", gzip.compress(b"", mtime=0)),
        ("blank.csv", b"  \n\t\r\n\n"),
        ("bom-only.csv", b"\xef\xbb\xbf"),
        ("utf16-bom-only.csv", b"\xff\xfe"),
        ("empty.json", b""),
        ("blank.json", b" \n "),
        ("empty.ndjson", b""),
        ("blank.jsonl", b"\n\n  \n"),
        ("empty.parquet", b""),
        ("empty.parquet.gz", gzip.compress(b"", mtime=0)),
    ],
)
def test_empty_file_is_rejected(tmp_path: Path, name: str, data: bytes) -> None:
    assert rejection(tmp_path, name, data) == "empty file"


@pytest.mark.parametrize(
    "data",
    [
        HEADER.encode(),
        (HEADER + "\n").encode(),
        (HEADER + "\r\n").encode(),
        (HEADER + "\n\n  \n").encode(),
        b"\xef\xbb\xbf" + (HEADER + "\n").encode(),
    ],
    ids=["no-newline", "lf", "crlf", "trailing-blank-lines", "bom"],
)
def test_header_only_csv_is_zero_rows(tmp_path: Path, data: bytes) -> None:
    table = read(tmp_path, "header.csv", data)
    assert table.num_rows == 0
    assert table.schema.names == ["source_row", *CANONICAL_FIELDS, "raw_record", "malformed"]


@pytest.mark.parametrize("data", [b"[]", b" [ ] \n"])
def test_empty_json_array_is_zero_rows(tmp_path: Path, data: bytes) -> None:
    assert read(tmp_path, "none.json", data).num_rows == 0


# --- CSV ------------------------------------------------------------------------------


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
def test_csv_line_endings(tmp_path: Path, newline: str) -> None:
    data = csv_bytes(HEADER, *(",".join(call.values()) for call in CALLS), newline=newline)
    table = read(tmp_path, "calls.csv", data)
    assert fields(table) == CALLS
    assert column(table, "raw_record") == [",".join(call.values()) for call in CALLS]


def test_csv_quoted_newlines_delimiters_and_quotes(tmp_path: Path) -> None:
    data = (
        b"call_id,carrier_id,disposition\r\n"
        b'C1,"Acme, Inc.","say ""hi"""\r\n'
        b'C2,"two\r\nlines","x\ny"\r\n'
        b"C3,plain,ok\r\n"
    )
    table = read(tmp_path, "quoted.csv", data)
    assert column(table, "source_row") == [1, 2, 3]
    assert column(table, "carrier_id") == ["Acme, Inc.", "two\r\nlines", "plain"]
    assert column(table, "disposition") == ['say "hi"', "x\ny", "ok"]
    # raw_record: the fields re-serialised with minimal quoting.
    assert column(table, "raw_record") == [
        'C1,"Acme, Inc.","say ""hi"""',
        'C2,"two\r\nlines","x\ny"',
        "C3,plain,ok",
    ]
    assert column(table, "malformed") == [False, False, False]


def test_csv_wrong_column_count_is_malformed_with_exact_rows(tmp_path: Path) -> None:
    data = (
        b"call_id,carrier_id,disposition\n"
        b"C1,A,ANSWERED\n"
        b"\n"
        b'C2,"multi\nline",BUSY\n'
        b"C3,only-two\n"
        b"  \n"
        b"C4,B,FAILED,extra\n"
        b'C5,"quoted\nbad"\n'
        b"C6,C,NO_ANSWER\n"
    )
    table = read(tmp_path, "bad.csv", data)
    assert column(table, "source_row") == [1, 2, 3, 4, 5, 6]
    assert column(table, "malformed") == [False, False, True, True, True, False]
    assert column(table, "raw_record") == [
        "C1,A,ANSWERED",
        'C2,"multi\nline",BUSY',
        "C3,only-two",
        "C4,B,FAILED,extra",
        'C5,"quoted\nbad"',
        "C6,C,NO_ANSWER",
    ]
    assert column(table, "call_id") == ["C1", "C2", None, None, None, "C6"]
    assert column(table, "carrier_id") == ["A", "multi\nline", None, None, None, "C"]
    assert column(table, "disposition") == ["ANSWERED", "BUSY", None, None, None, "NO_ANSWER"]


def test_csv_good_rows_read_the_same_with_and_without_a_malformed_row(tmp_path: Path) -> None:
    good = [f'C{i}," v{i} ","a,b",x"y' for i in range(1, 6)]
    clean = read(
        tmp_path, "clean.csv", csv_bytes("call_id,carrier_id,call_type,disposition", *good)
    )
    mixed = read(
        tmp_path,
        "mixed.csv",
        csv_bytes("call_id,carrier_id,call_type,disposition", *good[:2], "bad", *good[2:]),
    )
    assert column(mixed, "malformed") == [False, False, True, False, False, False]
    good_rows = [row for row in mixed.to_pylist() if not row["malformed"]]
    clean_rows = clean.to_pylist()
    for row in good_rows + clean_rows:
        del row["source_row"]
    assert good_rows == clean_rows
    assert clean_rows[0]["carrier_id"] == "v1"
    assert clean_rows[0]["disposition"] == 'x"y'
    assert clean_rows[0]["raw_record"] == 'C1, v1 ,"a,b","x""y"'


@pytest.mark.parametrize("seed", range(40))
def test_csv_random_files_read_as_the_csv_module_reads_them(tmp_path: Path, seed: int) -> None:
    """Fast path and malformed-record path both agree with csv.reader / csv.writer."""
    rng = random.Random(seed)
    alphabet = ["a", "b", " ", ",", '"', "\n", "\r\n", "\t", "é", "\u00a0", "\x00"]
    width = rng.randrange(1, 4)
    records = [
        ["".join(rng.choice(alphabet) for _ in range(rng.randrange(6))) for _ in range(width)]
        for _ in range(rng.randrange(1, 10))
    ]
    buffer = io.StringIO(newline="")
    csv.writer(buffer, lineterminator=rng.choice(["\n", "\r\n"])).writerows(
        [["call_id", "carrier_id", "note"][:width], *records]
    )
    text = buffer.getvalue()
    expected = []
    for record in list(csv.reader(io.StringIO(text, newline="")))[1:]:
        if not record or (len(record) == 1 and not record[0].strip()):
            continue  # a blank line
        line = io.StringIO(newline="")
        csv.writer(line, lineterminator="\r\n").writerow(record)
        values = [value.strip() or None for value in record]
        expected.append((values[0], values[1] if width > 1 else None, line.getvalue()[:-2]))
    for suffix in ("", "x,y,z,w\n"):
        table = read(tmp_path, "random.csv", (text + suffix).encode())
        good = [row for row in table.to_pylist() if not row["malformed"]]
        got = [(row["call_id"], row["carrier_id"], row["raw_record"]) for row in good]
        assert got == expected
        assert column(table, "source_row") == list(range(1, len(expected) + bool(suffix) + 1))
        assert column(table, "malformed")[-1:] == ([True] if suffix else [False] * bool(good))


@pytest.mark.parametrize("seed", range(60))
def test_a_text_without_quotes_finds_the_records_the_csv_module_finds(seed: int) -> None:
    """Arrow's search for malformed records in a text without quotes (a physical line is a
    record) and the csv module's agree: record count, positions, texts, the good records."""
    rng = random.Random(seed)
    width = rng.randrange(1, 5)
    pieces = ["a", "b", "7", " ", "\t", ",", "é", "\u00a0", "\x1c", "\ufeff", "+44"]
    ends = ["\n", "\r\n", "\r"]
    lines = []
    for _ in range(rng.randrange(0, 40)):
        kind = rng.random()
        if kind < 0.15:  # a blank line, or whitespace only
            body = rng.choice(["", " ", "\t ", "\u00a0"])
        elif kind < 0.3:  # a malformed record: too few or too many fields
            body = ",".join(rng.choice(pieces) for _ in range(rng.choice([1, width + 1, 7])))
        else:
            body = ",".join(
                "".join(rng.choice(pieces) for _ in range(rng.randrange(4))) for _ in range(width)
            )
        lines.append(body + rng.choice(ends))
    text = "".join(lines) + rng.choice(["", "x,y,z,w,v,u"])
    arrow = readers._unquoted_bad_records(text, width)
    module = readers._find_bad_records(readers._PHYSICAL_LINE.findall(text), width)
    assert (arrow.total, arrow.positions, arrow.texts) == (
        module.total,
        module.positions,
        module.texts,
    )
    ours, theirs = (readers._parse_good_records(b, width) for b in (arrow, module))
    assert ours is not None and theirs is not None
    assert [c.to_pylist() for c in ours] == [c.to_pylist() for c in theirs]
    data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    searched = readers._line_bad_records(data, width)
    if searched is None:  # a line ending in a lone carriage return: left to the kernels
        assert "\r" in text.replace("\r\n", "")
    else:
        assert (searched.total, searched.positions, searched.texts) == (
            module.total,
            module.positions,
            module.texts,
        )


@pytest.mark.parametrize("seed", range(40))
def test_csv_without_quotes_places_malformed_records_as_the_csv_module_does(
    tmp_path: Path, seed: int
) -> None:
    """A file without quotes: pyarrow skips the malformed records and byte searches place
    them; every row (values, raw text, source_row, malformed) is what the csv module reads."""
    rng = random.Random(seed)
    width = rng.randrange(2, 5)
    newline = rng.choice(["\n", "\r\n"])
    pieces = ["a", "7", " ", "\t", "é", "\u00a0", "+44"]
    header = ",".join(["call_id", "carrier_id", "note", "extra"][:width])
    lines = []
    for _ in range(rng.randrange(1, 60)):
        kind = rng.random()
        if kind < 0.1:
            lines.append(rng.choice(["", " ", "\t"]))
        elif kind < 0.3:
            lines.append(",".join(rng.choice(pieces) for _ in range(rng.choice([1, width + 1]))))
        else:
            lines.append(",".join("".join(rng.sample(pieces, 2)) for _ in range(width)))
    text = newline.join([header, *lines]) + rng.choice(["", newline])
    expected = []
    for record in list(csv.reader(io.StringIO(text, newline="")))[1:]:
        if not record or (len(record) == 1 and not record[0].strip()):
            continue
        if len(record) != width:
            expected.append((None, None, ",".join(record), True))
        else:
            expected.append(
                (record[0].strip() or None, record[1].strip() or None, ",".join(record), False)
            )
    table = read(tmp_path, "plain.csv", text.encode("utf-8"))
    got = [
        (row["call_id"], row["carrier_id"], row["raw_record"], row["malformed"])
        for row in table.to_pylist()
    ]
    assert got == expected
    assert column(table, "source_row") == list(range(1, len(expected) + 1))


def test_csv_all_records_malformed(tmp_path: Path) -> None:
    table = read(tmp_path, "allbad.csv", b"call_id,carrier_id\nA\nB,C,D\n")
    assert column(table, "source_row") == [1, 2]
    assert column(table, "malformed") == [True, True]
    assert column(table, "raw_record") == ["A", "B,C,D"]
    assert column(table, "call_id") == [None, None]


def test_csv_unterminated_quote_at_the_end(tmp_path: Path) -> None:
    # pyarrow refuses this file; the csv module reads the last record to the end.
    table = read(tmp_path, "open.csv", b'call_id,carrier_id\nC1,A\nC2,B,extra\nC3,"open\nend')
    assert column(table, "source_row") == [1, 2, 3]
    assert column(table, "malformed") == [False, True, False]
    assert column(table, "carrier_id") == ["A", None, "open\nend"]
    assert column(table, "raw_record") == ["C1,A", "C2,B,extra", 'C3,"open\nend"']


def test_csv_blank_lines_are_skipped_and_not_counted(tmp_path: Path) -> None:
    data = b"\n  \ncall_id\n\nC1\n \t \n\r\nC2\n\n"
    table = read(tmp_path, "blanks.csv", data)
    assert column(table, "source_row") == [1, 2]
    assert column(table, "call_id") == ["C1", "C2"]


def test_csv_unknown_columns_are_kept_in_raw_record(tmp_path: Path) -> None:
    data = b"note,call_id,extra,carrier_id\nhello,C1,x,A\n"
    table = read(tmp_path, "unknown.csv", data)
    assert only_field(table, "call_id") == "C1"
    assert only_field(table, "carrier_id") == "A"
    assert only_field(table, "raw_record") == "hello,C1,x,A"


def test_csv_missing_canonical_columns_are_null(tmp_path: Path) -> None:
    table = read(tmp_path, "few.csv", b"call_id,called_number\nC1,+33612345678\n")
    assert fields(table) == [
        {
            **dict.fromkeys(CANONICAL_FIELDS),
            "call_id": "C1",
            "called_number": "+33612345678",
        }
    ]


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("call_id,carrier_id,CALL_ID", "repeated column call_id (columns 1 and 3)"),
        ("x, Carrier_Id ,carrier_id", "repeated column carrier_id (columns 2 and 3)"),
    ],
)
def test_csv_repeated_canonical_column_is_rejected(
    tmp_path: Path, header: str, reason: str
) -> None:
    assert rejection(tmp_path, "twice.csv", csv_bytes(header, "1,2,3")) == reason


def test_csv_repeated_unknown_columns_are_fine(tmp_path: Path) -> None:
    table = read(tmp_path, "notes.csv", csv_bytes("note,call_id,note", "a,C1,b"))
    assert only_field(table, "call_id") == "C1"
    assert only_field(table, "raw_record") == "a,C1,b"


def test_csv_header_names_ignore_case_and_surrounding_blanks(tmp_path: Path) -> None:
    header = " Call_ID ,CALLED_NUMBER,\tStart_Time\t, Carrier_id"
    table = read(tmp_path, "case.csv", csv_bytes(header, "C1,+33612345678,2026-01-05T10:00:00Z,A"))
    row = fields(table)[0]
    assert row["call_id"] == "C1"
    assert row["called_number"] == "+33612345678"
    assert row["start_time"] == "2026-01-05T10:00:00Z"
    assert row["carrier_id"] == "A"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("C1", "C1"),
        ("  C1  ", "C1"),
        ("\tC1\t", "C1"),
        ("\u00a0C1\u00a0", "C1"),
        ("\u3000C1\u2003", "C1"),
        ("\x1cC1\x1f", "C1"),
        ("\x0bC1\x0c", "C1"),
        ("C 1", "C 1"),
        ("", None),
        ("   ", None),
        ("\u00a0\t", None),
        ('""', None),
        ('"  "', None),
        ('" C1 "', "C1"),
    ],
)
def test_csv_values_are_stripped_as_python_strips(
    tmp_path: Path, given: str, expected: str | None
) -> None:
    table = read(tmp_path, "strip.csv", csv_bytes("call_id,carrier_id", f"{given},A"))
    assert only_field(table, "call_id") == expected
    assert only_field(table, "carrier_id") == "A"


def test_strip_set_matches_python_whitespace(tmp_path: Path) -> None:
    # Every character str.strip() removes, and a few it keeps (zero-width space, BOM).
    spaces = "".join(chr(c) for c in range(0x110000) if chr(c).isspace())
    kept = "\u200b\ufeff"
    lines = [f'"{space}x{space}"' for space in spaces if space not in "\r\n"]
    lines += ['"\r\nx\r\n"', f"{kept}x{kept}"]
    table = read(tmp_path, "spaces.csv", csv_bytes("call_id", *lines))
    assert column(table, "call_id") == ["x"] * (len(lines) - 1) + [f"{kept}x{kept}"]


def test_csv_nul_byte_in_a_value(tmp_path: Path) -> None:
    data = csv_bytes(HEADER, ",".join(CALLS[0].values()).replace("CARR1", "CA\x00RR1"))
    table = read(tmp_path, "nul.csv", data)
    assert only_field(table, "carrier_id") == "CA\x00RR1"
    assert only_field(table, "call_id") == "C1"
    assert only_field(table, "malformed") is False


def test_csv_nul_byte_in_a_malformed_file(tmp_path: Path) -> None:
    data = csv_bytes(HEADER, ",".join(CALLS[0].values()).replace("CARR1", "C\x00"), "x,\x00")
    table = read(tmp_path, "nulbad.csv", data)
    assert column(table, "carrier_id") == ["C\x00", None]
    assert column(table, "raw_record")[1] == "x,\x00"
    assert column(table, "malformed") == [False, True]


@pytest.mark.parametrize("quoted", [False, True])
def test_csv_ten_megabyte_field(tmp_path: Path, quoted: bool) -> None:
    big = "x" * 10_000_000
    value = f'"{big}"' if quoted else big
    table = read(tmp_path, "big.csv", csv_bytes("call_id,carrier_id", f"C1,{value}", "C2,B"))
    assert column(table, "call_id") == ["C1", "C2"]
    assert len(column(table, "carrier_id")[0]) == 10_000_000
    assert column(table, "carrier_id")[1] == "B"
    assert column(table, "raw_record")[0] == "C1," + big


def test_csv_ten_megabyte_field_in_a_malformed_file(tmp_path: Path) -> None:
    big = "y" * 10_000_000
    table = read(tmp_path, "bigbad.csv", csv_bytes("call_id,carrier_id", f"C1,{big}", "C2"))
    assert column(table, "malformed") == [False, True]
    assert len(column(table, "carrier_id")[0]) == 10_000_000
    assert column(table, "raw_record")[1] == "C2"


def test_csv_without_quotes_places_malformed_records_without_splitting_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pyarrow skips them and the byte search places them, a record longer than pyarrow's
    block included: the text is never split into lines nor parsed twice."""

    def unused(*args: object) -> None:
        raise AssertionError("the line-by-line search was used")

    monkeypatch.setattr(readers, "_unquoted_bad_records", unused)
    monkeypatch.setattr(readers, "_find_bad_records", unused)
    big = "y" * (readers._CSV_BLOCK_SIZE + 1_000_000)
    table = read(
        tmp_path, "bigbad.csv", csv_bytes("call_id,carrier_id", "C0", f"C1,{big}", "C2,a,b")
    )
    assert column(table, "malformed") == [True, False, True]
    assert column(table, "raw_record")[::2] == ["C0", "C2,a,b"]
    assert column(table, "carrier_id")[1] == big


def test_csv_ten_megabyte_field_in_the_malformed_record(tmp_path: Path) -> None:
    big = "z" * 10_000_000
    table = read(tmp_path, "bigbad.csv", csv_bytes("call_id,carrier_id", "C1,A", f'C2,"{big}",x'))
    assert column(table, "malformed") == [False, True]
    assert column(table, "raw_record")[1] == f'C2,"{big}",x'


def test_csv_ten_megabyte_header_name(tmp_path: Path) -> None:
    table = read(tmp_path, "bighead.csv", csv_bytes(f"call_id,{'n' * 10_000_000}", "C1,A"))
    assert column(table, "call_id") == ["C1"]


def test_csv_many_rows_keep_their_order(tmp_path: Path) -> None:
    lines = [f"C{i},{i}" for i in range(200_000)]
    table = read(tmp_path, "many.csv", csv_bytes("call_id,duration_seconds", *lines))
    assert table.num_rows == 200_000
    assert column(table, "source_row")[-1] == 200_000
    assert column(table, "call_id")[123_456] == "C123456"
    assert column(table, "raw_record")[199_999] == "C199999,199999"


@pytest.mark.parametrize("bad", [False, True], ids=["fast", "with-malformed"])
def test_single_column_csv_blank_values_are_blank_lines(tmp_path: Path, bad: bool) -> None:
    lines = ["C1", '""', "  ", "\t", '" "', '"C,5"', *(["C6,x"] if bad else [])]
    table = read(tmp_path, "one.csv", csv_bytes("call_id", *lines))
    assert column(table, "source_row") == [1, 2, 3][: 3 if bad else 2]
    assert column(table, "call_id") == ["C1", "C,5", None][: 3 if bad else 2]
    assert column(table, "raw_record") == ["C1", '"C,5"', "C6,x"][: 3 if bad else 2]


def test_csv_record_of_one_blank_field_is_a_blank_line(tmp_path: Path) -> None:
    table = read(tmp_path, "blank.csv", b'call_id,carrier_id\nC1,A\n""\n" "\nC2,B\n,\n')
    assert column(table, "source_row") == [1, 2, 3]
    assert column(table, "call_id") == ["C1", "C2", None]
    assert column(table, "raw_record") == ["C1,A", "C2,B", ","]
    assert column(table, "malformed") == [False, False, False]


# --- JSON and NDJSON ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"300"', "300"),
        ("300", "300"),
        ("-5", "-5"),
        ("60.0", "60.0"),
        ("1.5", "1.5"),
        ("3e2", "300.0"),
        ('"3e2"', "3e2"),
        ("true", "true"),
        ("false", "false"),
        ("null", None),
        ('""', None),
        ('" 60 "', "60"),
        ('{"a": [1, 2]}', '{"a":[1,2]}'),
        ("[]", "[]"),
        ('"Télécom ☎"', "Télécom ☎"),
    ],
)
@pytest.mark.parametrize("fmt", [".json", ".ndjson"])
def test_json_value_conversion(tmp_path: Path, fmt: str, value: str, expected: str | None) -> None:
    element = f'{{"call_id": "C1", "duration_seconds": {value}}}'
    data = f"[{element}]" if fmt == ".json" else element + "\n"
    table = read(tmp_path, "values" + fmt, data.encode())
    assert only_field(table, "duration_seconds") == expected
    assert only_field(table, "call_id") == "C1"


def test_json_keys_match_like_csv_headers(tmp_path: Path) -> None:
    data = b'[{" Call_ID ": "C1", "CARRIER_ID": "A", "note": 1}]'
    table = read(tmp_path, "keys.json", data)
    assert only_field(table, "call_id") == "C1"
    assert only_field(table, "carrier_id") == "A"
    assert only_field(table, "raw_record") == '{" Call_ID ":"C1","CARRIER_ID":"A","note":1}'


@pytest.mark.parametrize(
    ("element", "expected"),
    [
        ({"Call_ID": "A", "call_id": "B"}, "A"),
        ({"Call_ID": "", "call_id ": "B"}, "B"),
        ({"CALL_ID": None, "call_id": "  ", "Call_Id": 7}, "7"),
        ({"CALL_ID": None, "call_id": " "}, None),
    ],
)
def test_json_two_keys_for_one_field_take_the_first_non_empty(
    tmp_path: Path, element: dict[str, Any], expected: str | None
) -> None:
    rows = [{"call_id": "before"}, element, {"call_id": "after"}]
    table = read(tmp_path, "dupes.json", json.dumps(rows).encode())
    assert column(table, "call_id") == ["before", expected, "after"]
    assert column(table, "malformed") == [False, False, False]


def test_json_array_non_object_elements_are_malformed(tmp_path: Path) -> None:
    data = b'[{"call_id": "C1"}, 5, "text", [1, {"a": 2}], null, {"call_id": "C6"}]'
    table = read(tmp_path, "mixed.json", data)
    assert column(table, "source_row") == [1, 2, 3, 4, 5, 6]
    assert column(table, "malformed") == [False, True, True, True, True, False]
    assert column(table, "raw_record") == [
        '{"call_id":"C1"}',
        "5",
        '"text"',
        '[1,{"a":2}]',
        "null",
        '{"call_id":"C6"}',
    ]
    assert column(table, "call_id") == ["C1", None, None, None, None, "C6"]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"call_id": "C1"}', "a .json file must hold one array of objects, not an object"),
        (b'"calls"', "a .json file must hold one array of objects, not a string"),
        (b"42", "a .json file must hold one array of objects, not a number"),
        (
            b'[{"call_id": "C1"},',
            "not valid JSON: Expecting value: line 1 column 20 (char 19)",
        ),
        (
            b'{"call_id": "C1"}\n{"call_id": "C2"}\n',
            "not valid JSON: Extra data: line 2 column 1 (char 18)",
        ),
    ],
)
def test_json_document_that_is_not_an_array_is_rejected(
    tmp_path: Path, data: bytes, reason: str
) -> None:
    assert rejection(tmp_path, "doc.json", data) == reason


def test_json_deeply_nested_document_is_rejected_not_crashing(tmp_path: Path) -> None:
    reason = rejection(tmp_path, "deep.json", b"[" * 100_000 + b"]" * 100_000)
    assert reason.startswith("not valid JSON: ")


def test_ndjson_broken_lines_and_blank_lines_keep_line_numbers(tmp_path: Path) -> None:
    data = (
        b'{"call_id": "C1"}\n'
        b"\n"
        b'{"call_id": "C3", broken\n'
        b"   \n"
        b"[1, 2]\n"
        b'{"call_id": "C6"}\r\n'
        b'"just a string"\n'
        b'{"call_id": "C8"} {"call_id": "C9"}\n'
        b' {"call_id" : "C10"} '
    )
    table = read(tmp_path, "lines.ndjson", data)
    assert column(table, "source_row") == [1, 3, 5, 6, 7, 8, 9]
    assert column(table, "malformed") == [False, True, True, False, True, True, False]
    assert column(table, "raw_record") == [
        '{"call_id": "C1"}',
        '{"call_id": "C3", broken',
        "[1, 2]",
        '{"call_id": "C6"}',
        '"just a string"',
        '{"call_id": "C8"} {"call_id": "C9"}',
        ' {"call_id" : "C10"} ',
    ]
    assert column(table, "call_id") == ["C1", None, None, "C6", None, None, "C10"]


def test_jsonl_gzipped_counts_uncompressed_lines(tmp_path: Path) -> None:
    data = b'\n\n{"call_id": "C3"}\nnot json\n{"call_id": "C5"}\n'
    table = read(tmp_path, "lines.jsonl.gz", gzip.compress(data))
    assert column(table, "source_row") == [3, 4, 5]
    assert column(table, "malformed") == [False, True, False]


def test_json_lone_surrogate_escape_does_not_crash(tmp_path: Path) -> None:
    table = read(tmp_path, "surrogate.json", b'[{"call_id": "A\\ud800B"}]')
    assert only_field(table, "call_id") == "A\ufffdB"
    assert only_field(table, "raw_record") == '{"call_id":"A\\ud800B"}'


def test_json_keys_differ_between_objects(tmp_path: Path) -> None:
    rows = [
        {"call_id": "C1", "carrier_id": "A"},
        {"carrier_id": "B", "CALL_ID": "C2", "end_time": "t"},
        {"call_id": "C3"},
    ]
    table = read(tmp_path, "keys.json", json.dumps(rows).encode())
    assert column(table, "call_id") == ["C1", "C2", "C3"]
    assert column(table, "carrier_id") == ["A", "B", None]
    assert column(table, "end_time") == [None, "t", None]


# --- Parquet --------------------------------------------------------------------------


def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def test_parquet_value_conversion(tmp_path: Path) -> None:
    utc = dt.UTC
    table = pa.table(
        {
            "Call_ID": pa.array([1, 2, None], pa.int64()),
            "duration_seconds": pa.array([60.0, 1.5, None], pa.float64()),
            "start_time": pa.array(
                [dt.datetime(2026, 1, 5, 10, 0, tzinfo=utc)] * 2 + [None],
                pa.timestamp("us", tz="UTC"),
            ),
            "end_time": pa.array(
                [dt.datetime(2026, 1, 5, 10, 1), dt.datetime(2026, 1, 5, 10, 2), None],
                pa.timestamp("ms"),
            ),
            "carrier_id": pa.array([" A ", "B", ""]),
            "disposition": pa.array([True, False, None]),
            "call_type": pa.array([dt.date(2026, 1, 5), None, None], pa.date32()),
            "country_code": pa.array(["fr", "gb", "fr"]).dictionary_encode(),
            "note": pa.array([[1, 2], None, []], pa.list_(pa.int64())),
        }
    )
    result = read(tmp_path, "typed.parquet", parquet_bytes(table))
    assert column(result, "source_row") == [1, 2, 3]
    assert column(result, "call_id") == ["1", "2", None]
    assert column(result, "duration_seconds") == ["60.0", "1.5", None]
    assert column(result, "start_time") == [
        "2026-01-05T10:00:00+00:00",
        "2026-01-05T10:00:00+00:00",
        None,
    ]
    assert column(result, "end_time") == ["2026-01-05T10:01:00", "2026-01-05T10:02:00", None]
    assert column(result, "carrier_id") == ["A", "B", None]
    assert column(result, "disposition") == ["true", "false", None]
    assert column(result, "call_type") == ["2026-01-05", None, None]
    assert column(result, "country_code") == ["fr", "gb", "fr"]
    assert column(result, "malformed") == [False, False, False]
    assert [json.loads(raw) for raw in column(result, "raw_record")] == [
        {
            "Call_ID": 1,
            "duration_seconds": 60.0,
            "start_time": "2026-01-05T10:00:00+00:00",
            "end_time": "2026-01-05T10:01:00",
            "carrier_id": " A ",
            "disposition": True,
            "call_type": "2026-01-05",
            "country_code": "fr",
            "note": [1, 2],
        },
        {
            "Call_ID": 2,
            "duration_seconds": 1.5,
            "start_time": "2026-01-05T10:00:00+00:00",
            "end_time": "2026-01-05T10:02:00",
            "carrier_id": "B",
            "disposition": False,
            "call_type": None,
            "country_code": "gb",
            "note": None,
        },
        {
            "Call_ID": None,
            "duration_seconds": None,
            "start_time": None,
            "end_time": None,
            "carrier_id": "",
            "disposition": None,
            "call_type": None,
            "country_code": "fr",
            "note": [],
        },
    ]
    assert column(result, "raw_record")[0].startswith('{"Call_ID":1,"duration_seconds":60.0,')


@pytest.mark.parametrize(
    ("values", "kind", "expected"),
    [
        (
            [dt.datetime(2026, 7, 5, 10, 0, 0, 500000)],
            pa.timestamp("us"),
            "2026-07-05T10:00:00.500000",
        ),
        (
            [dt.datetime(2026, 7, 5, 10, 0, tzinfo=dt.UTC)],
            pa.timestamp("s", tz="Europe/London"),
            "2026-07-05T10:00:00+00:00",
        ),
        ([dt.datetime(2026, 7, 5, 10, 0)], pa.timestamp("ns"), "2026-07-05T10:00:00"),
        ([dt.date(2026, 7, 5)], pa.date64(), "2026-07-05"),
        ([1e16], pa.float64(), "1e+16"),
        ([-3.0], pa.float32(), "-3.0"),
        ([0.1], pa.float32(), "0.1"),
        ([7], pa.int8(), "7"),
        ([7], pa.uint64(), "7"),
        (["x"], pa.large_string(), "x"),
    ],
)
def test_parquet_column_types_as_text(
    tmp_path: Path, values: list[Any], kind: pa.DataType, expected: str
) -> None:
    table = pa.table({"duration_seconds": pa.array(values, kind)})
    result = read(tmp_path, "one.parquet", parquet_bytes(table))
    assert only_field(result, "duration_seconds") == expected


def test_parquet_string_escaping_in_raw_record(tmp_path: Path) -> None:
    text = ' a"b\\c\nd\te\x01f\u2028 '
    table = pa.table({"carrier_id": [text]})
    result = read(tmp_path, "escape.parquet", parquet_bytes(table))
    raw = only_field(result, "raw_record")
    assert raw == json.dumps({"carrier_id": text}, ensure_ascii=False, separators=(",", ":"))
    assert only_field(result, "carrier_id") == 'a"b\\c\nd\te\x01f'


def test_parquet_repeated_column_is_rejected(tmp_path: Path) -> None:
    table = pa.table({"call_id": ["a"], " CALL_ID": ["b"]})
    reason = rejection(tmp_path, "twice.parquet", parquet_bytes(table))
    assert reason == "repeated column call_id (columns 1 and 2)"


def test_parquet_gzipped(tmp_path: Path) -> None:
    table = read(tmp_path, "calls.parquet.gz", gzip.compress(calls_as(".parquet")))
    assert fields(table) == CALLS


@pytest.mark.parametrize(
    "data", [b"PAR1 not really PAR1", b"call_id\nC1\n", b"\x00" * 100], ids=["magic", "csv", "nul"]
)
def test_unreadable_parquet_is_rejected(tmp_path: Path, data: bytes) -> None:
    assert rejection(tmp_path, "broken.parquet", data).startswith("not a readable Parquet file: ")


# --- gzip and size limits -------------------------------------------------------------


def gzip_stream(head: bytes, chunk: bytes, *, repeat: int) -> bytes:
    """gzip of head + chunk * repeat, without holding the inflated content."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [packer.compress(head)]
    parts += [packer.compress(chunk) for _ in range(repeat)]
    parts.append(packer.flush())
    return b"".join(parts)


def test_gzip_bomb_is_refused_without_inflating_it(tmp_path: Path) -> None:
    bomb = gzip_stream(b"call_id\n", b"0" * 1_000_000, repeat=200)  # 200 MB inflated
    assert len(bomb) < 1_000_000
    path = write(tmp_path, "bomb.csv.gz", bomb)
    tracemalloc.start()
    try:
        with pytest.raises(FileRejected) as caught:
            read_landing_file(path, max_uncompressed_bytes=5_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(caught.value) == "uncompressed size exceeds the limit of 5000000 bytes"
    assert peak < 20_000_000


def test_content_at_the_limit_is_read(tmp_path: Path) -> None:
    data = csv_bytes("call_id", "C1")
    table = read(tmp_path, "exact.csv.gz", gzip.compress(data), max_uncompressed_bytes=len(data))
    assert column(table, "call_id") == ["C1"]


def test_plain_file_over_the_limit_is_refused(tmp_path: Path) -> None:
    reason = rejection(tmp_path, "big.csv", csv_bytes("call_id", "C1"), max_uncompressed_bytes=5)
    assert reason == "uncompressed size exceeds the limit of 5 bytes"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (
            gzip.compress(csv_bytes("call_id", "C1", "C2"))[:-6],
            "broken gzip compression: Compressed file ended before the end-of-stream marker "
            "was reached",
        ),
        (b"call_id\nC1\n", "broken gzip compression: Not a gzipped file (b'ca')"),
        (
            gzip.compress(csv_bytes("call_id", "C1"))[:-8] + b"\x00\x00\x00\x00\x00\x00\x00\x00",
            f"broken gzip compression: CRC check failed 0x0 != "
            f"{hex(zlib.crc32(csv_bytes('call_id', 'C1')))}",
        ),
    ],
    ids=["truncated", "not-gzip", "bad-crc"],
)
def test_broken_gzip_is_rejected(tmp_path: Path, data: bytes, reason: str) -> None:
    assert rejection(tmp_path, "calls.csv.gz", data) == reason


def test_gzip_source_rows_count_uncompressed_content(tmp_path: Path) -> None:
    data = b"call_id,carrier_id\nC1,A\n\nC2\nC3,B\n"
    table = read(tmp_path, "calls.csv.gz", gzip.compress(data))
    assert column(table, "source_row") == [1, 2, 3]
    assert column(table, "malformed") == [False, True, False]
    assert column(table, "raw_record") == ["C1,A", "C2", "C3,B"]


# --- records left implied -----------------------------------------------------------


def record_texts(table: pa.Table) -> list[str]:
    """Each row's raw_record, an implied one written out by ``record_text_sql`` in DuckDB."""
    sql = readers.record_text_sql({name: name for name in CANONICAL_FIELDS})
    with duckdb.connect() as con:
        con.register("rows", table)
        return [
            r[0] for r in con.execute(f"SELECT coalesce(raw_record, {sql}) FROM rows").fetchall()
        ]


def test_a_canonical_csv_leaves_its_well_formed_records_implied(tmp_path: Path) -> None:
    text = f"{HEADER}\nC1,+441,+442,2026-01-05T10:00:00Z,,60,K1,,,\nbroken,line\nC2,,,,,,,,,\n"
    path = write(tmp_path, "calls.csv", text.encode())
    implied = read_landing_file(path, implied_records=True)
    assert column(implied, "raw_record") == [None, "broken,line", None]
    assert column(implied, "malformed") == [False, True, False]
    assert record_texts(implied) == text.splitlines()[1:]
    full = read_landing_file(path)
    assert implied.drop_columns("raw_record") == full.drop_columns("raw_record")


LINE = "C1,+441,+442,2026-01-05T10:00:00Z,,60,K1,,,"


@pytest.mark.parametrize(
    ("header", "line", "implied"),
    [
        (HEADER, LINE, True),
        # The header names the fields in their order, in another case and with spaces.
        (HEADER.upper().replace(",", " , "), LINE, True),
        (HEADER, "C1 " + LINE[2:], False),  # a value is stripped
        (HEADER, '"C,1"' + LINE[2:], False),  # a value is quoted
        (HEADER + ",note", LINE + ",x", False),  # a column more
        (",".join(reversed(CANONICAL_FIELDS)), ",".join(reversed(LINE.split(","))), False),
    ],
)
def test_a_record_is_implied_only_when_the_fields_give_it_back(
    tmp_path: Path, header: str, line: str, implied: bool
) -> None:
    path = write(tmp_path, "calls.csv", f"{header}\n{line}\n".encode())
    read_implied = read_landing_file(path, implied_records=True)
    assert column(read_implied, "raw_record") == [None if implied else line]
    assert record_texts(read_implied) == [line]


def implied_round_trip(tmp_path: Path, seed: int) -> int:
    """A random CSV file, canonical or not, read with implied records and in full: writing
    the implied records out again with ``record_text_sql`` gives every row's raw_record
    of the full read. Returns how many records were left implied."""
    rng = random.Random(seed)
    fields = list(CANONICAL_FIELDS)
    if rng.random() < 0.3:
        rng.shuffle(fields)
    if rng.random() < 0.2:
        fields.append("note")
    pieces = ["a", "7", "+44", "", "", "é"]
    if rng.random() < 0.3:
        pieces += [" ", "\u00a0"]  # values that are stripped
    if rng.random() < 0.3:
        pieces += [",", '"']  # values that are quoted
    records = []
    for _ in range(rng.randrange(1, 50)):
        width = len(fields) if rng.random() < 0.85 else rng.choice([1, 3, len(fields) + 1])
        records.append(["".join(rng.sample(pieces, 2)) for _ in range(width)])
    buffer = io.StringIO(newline="")
    csv.writer(buffer, lineterminator=rng.choice(["\n", "\r\n"])).writerows([fields, *records])
    path = write(tmp_path, "random.csv", buffer.getvalue().encode())
    implied = read_landing_file(path, implied_records=True)
    full = read_landing_file(path)
    assert record_texts(implied) == column(full, "raw_record")
    assert implied.drop_columns("raw_record") == full.drop_columns("raw_record")
    return implied["raw_record"].null_count


def test_implied_records_written_out_are_the_records_read_in_full(tmp_path: Path) -> None:
    implied = [implied_round_trip(tmp_path, seed) for seed in range(60)]
    # The files take both paths: some leave records implied, the others none.
    assert 10 <= sum(1 for n in implied if n) <= 50, implied
