"""Reading one landing file into rows of text.

This module owns the file-level half of the data contract ("Input files" in
docs/cdr-contract.md): recognising a file's format from its name, gzip, text encodings,
and splitting the content into rows. Each row carries its 1-based ``source_row``, the ten
canonical fields as stripped strings (empty means null), its raw text and whether it could
be split into fields at all. It judges no values: parsing, validation and rejection
reasons belong downstream. A file that cannot be read as a whole raises `FileRejected`.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import functools
import gc
import gzip
import io
import json
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

CANONICAL_FIELDS: tuple[str, ...] = (
    "call_id",
    "caller_number",
    "called_number",
    "start_time",
    "end_time",
    "duration_seconds",
    "carrier_id",
    "call_type",
    "country_code",
    "disposition",
)

_BASE_SUFFIXES: tuple[str, ...] = (".csv", ".json", ".ndjson", ".jsonl", ".parquet")
SUPPORTED_SUFFIXES: tuple[str, ...] = _BASE_SUFFIXES + tuple(s + ".gz" for s in _BASE_SUFFIXES)

DEFAULT_MAX_UNCOMPRESSED_BYTES = 4 * 2**30

OUTPUT_SCHEMA = pa.schema(
    [
        pa.field("source_row", pa.int64(), nullable=False),
        *(pa.field(name, pa.string()) for name in CANONICAL_FIELDS),
        pa.field("raw_record", pa.string()),
        pa.field("malformed", pa.bool_(), nullable=False),
    ]
)

# Exactly the characters Python's str.strip() removes (str.isspace()); Arrow's own
# "whitespace" differs (e.g. on U+001C..U+001F and U+0085), and the contract says
# "as Python's str.strip() sees it".
_PY_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004"
    "\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)

_READ_CHUNK = 1 << 20
_UTF8_CHECK_CHUNK = 16 << 20
_NUL_SNIFF_BYTES = 4096
# Several blocks per file let pyarrow parse on both cores; a row longer than a block
# (a 10 MB field) makes pyarrow fail with "straddling", and we retry with one block.
_CSV_BLOCK_SIZE = 16 << 20
_CSV_MAX_BLOCK_SIZE = 2**31 - 1
_MAX_REASON_CHARS = 300

_NULL_STRING = pa.scalar(None, pa.string())
_CSV_NEEDS_QUOTES = r'[",\r\n]'
_CSV_SPECIAL_BYTES = (b'"', b",", b"\r", b"\n")
_JSON_SPECIAL_BYTES = (b'"', b"\\", *(bytes([code]) for code in range(0x20)))
_JSON_SHORT_ESCAPES = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
_CSV_SPECIAL = re.compile(rb'[",\r\n]')
# Where _first_record_bounds is in a record: at the start of a field, in an unquoted field,
# in a quoted value, or just after a quote that closed (or doubles a quote in) the value.
_FIELD_START, _UNQUOTED, _QUOTED, _AFTER_QUOTED = range(4)
# A line ends as the csv module ends one: "\r\n", a lone "\r" or "\n".
_LINE_END = re.compile(rb"\r\n|\r|\n")
# Lines as csv.reader wants them (ending in \r\n, \n or \r), split at C speed.
_PHYSICAL_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class FileRejected(Exception):
    """The file as a whole cannot be read; ``str(exc)`` is a one-line reason."""


def is_supported(name: str) -> bool:
    """Whether a file name has one of the SUPPORTED_SUFFIXES (any case)."""
    return _format_of(name) is not None


def read_landing_file(
    path: Path,
    *,
    max_uncompressed_bytes: int = DEFAULT_MAX_UNCOMPRESSED_BYTES,
    implied_records: bool = False,
) -> pa.Table:
    """Read one landing file into a table of OUTPUT_SCHEMA, rows in file order.

    ``implied_records``: leave ``raw_record`` null where it is exactly the row's ten
    canonical fields joined by commas (nulls as empty), which :func:`record_text_sql`
    gives back. That is every well-formed record of a CSV file whose header is the
    canonical fields in their order and whose values are neither stripped nor quoted; any
    other row keeps its text.

    Raises FileRejected when the file cannot be read at all: unknown format, broken
    gzip, content over ``max_uncompressed_bytes``, undecodable text, empty content,
    a repeated canonical column, or a document that is not of its format.
    """
    path = Path(path)
    found = _format_of(path.name)
    if found is None:
        raise FileRejected(f"unsupported format {_suffix_for_message(path.name)}")
    fmt, compressed = found
    content = _read_content(path, compressed, max_uncompressed_bytes)
    if not content:
        raise FileRejected("empty file")
    readers: dict[str, Callable[[bytes], pa.Table]] = {
        ".csv": functools.partial(_read_csv, implied_records=implied_records),
        ".json": _read_json_array,
        ".ndjson": _read_json_lines,
        ".jsonl": _read_json_lines,
        ".parquet": _read_parquet,
    }
    try:
        table = readers[fmt](content)
    except FileRejected:
        raise
    except (pa.ArrowException, ValueError, csv.Error, RecursionError) as exc:
        # Whatever slipped past the specific checks is still a file we cannot read,
        # never a crash of the run.
        raise FileRejected(f"unreadable {fmt[1:]} file: {_one_line(exc)}") from exc
    return table.cast(OUTPUT_SCHEMA)


# --- file names and bytes -----------------------------------------------------------


def _format_of(name: str) -> tuple[str, bool] | None:
    lowered = name.lower()
    compressed = lowered.endswith(".gz")
    if compressed:
        lowered = lowered[: -len(".gz")]
    for suffix in _BASE_SUFFIXES:
        if lowered.endswith(suffix) and len(lowered) > len(suffix):
            return suffix, compressed
    return None


def _suffix_for_message(name: str) -> str:
    suffixes = Path(name).suffixes
    if not suffixes:
        return "(no file extension)"
    if suffixes[-1].lower() == ".gz" and len(suffixes) > 1:
        return "".join(suffixes[-2:])
    return suffixes[-1]


def _read_content(path: Path, compressed: bool, limit: int) -> bytes:
    if not compressed:
        size = path.stat().st_size
        if size > limit:
            raise FileRejected(f"uncompressed size exceeds the limit of {limit} bytes")
        return path.read_bytes()
    return _gunzip_capped(path, limit)


def _gunzip_capped(path: Path, limit: int) -> bytes:
    """Inflate a gzip file chunk by chunk, refusing it as soon as it passes `limit`."""
    chunks: list[bytes] = []
    total = 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(_READ_CHUNK):
                total += len(chunk)
                if total > limit:
                    raise FileRejected(f"uncompressed size exceeds the limit of {limit} bytes")
                chunks.append(chunk)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise FileRejected(f"broken gzip compression: {_one_line(exc)}") from exc
    return b"".join(chunks)


# --- text encodings -----------------------------------------------------------------


def _utf8_body(content: bytes) -> memoryview:
    """The content as validated UTF-8 without byte-order mark (UTF-16 is transcoded)."""
    if content.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return memoryview(_decode_utf16(content).encode("utf-8"))
    bom = len(codecs.BOM_UTF8) if content.startswith(codecs.BOM_UTF8) else 0
    body = memoryview(content)[bom:]
    _reject_nul_heavy(body, bom)
    _check_utf8(body, bom)
    return body


def _decode_text(content: bytes) -> str:
    """The content as text without byte-order mark, for the JSON formats."""
    if content.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return _decode_utf16(content)
    bom = len(codecs.BOM_UTF8) if content.startswith(codecs.BOM_UTF8) else 0
    body = memoryview(content)[bom:]
    _reject_nul_heavy(body, bom)
    try:
        return codecs.utf_8_decode(body, "strict", True)[0]
    except UnicodeDecodeError as exc:
        raise _not_utf8(body, exc.start, bom) from None


def _decode_utf16(content: bytes) -> str:
    try:
        return content.decode("utf-16")  # the BOM picks the byte order and is dropped
    except UnicodeDecodeError as exc:
        raise FileRejected(f"not valid UTF-16 text ({exc.reason} at offset {exc.start})") from None


def _check_utf8(body: memoryview, base: int) -> None:
    """Validate in bounded chunks so a large file is not held twice as text."""
    position = 0
    while position < len(body):
        chunk = body[position : position + _UTF8_CHECK_CHUNK]
        final = position + len(chunk) >= len(body)
        try:
            # Not final: a character cut at the chunk's end is left for the next chunk.
            _, used = codecs.utf_8_decode(chunk, "strict", final)
        except UnicodeDecodeError as exc:
            raise _not_utf8(body, position + exc.start, base) from None
        position += used


def _not_utf8(body: memoryview, offset: int, base: int) -> FileRejected:
    return FileRejected(
        f"not valid UTF-8 text (byte 0x{body[offset]:02x} at offset {base + offset})"
    )


def _reject_nul_heavy(body: memoryview, base: int) -> None:
    """Refuse text whose start is full of NUL bytes: UTF-16/32 without a byte-order mark.

    ASCII written as UTF-16 is valid UTF-8 byte for byte, so decoding alone cannot tell;
    real CSV/JSON text has at most a stray NUL inside a value.
    """
    sample = bytes(body[:_NUL_SNIFF_BYTES])
    if 0 not in sample:
        return
    per_parity = max(sample[0::2].count(0), sample[1::2].count(0))
    if per_parity * 4 >= max(1, len(sample) // 2):
        offset = sample.index(0)
        raise FileRejected(
            f"not valid UTF-8 text (byte 0x00 at offset {base + offset}; "
            "NUL bytes as in UTF-16 without a byte-order mark)"
        )


# --- CSV ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _CsvRecords:
    """One string column per header column; null where a record is malformed."""

    columns: list[Any]
    # Raw text of each malformed record, null for the others; None when there is none.
    malformed_text: pa.Array | None = None


@dataclass(frozen=True)
class _BadRecords:
    """Where the malformed records sit, and the file's text without them."""

    total: int  # records, blank lines not counted
    positions: list[int]  # 0-based record index of each malformed record
    texts: list[str]
    good_text: str


def _read_csv(content: bytes, *, implied_records: bool = False) -> pa.Table:
    data = _utf8_body(content)
    start = _skip_blank_lines(data, 0)
    if start >= len(data):
        raise FileRejected("empty file")
    header_end, body_start = _first_record_bounds(data, start)
    header = _parse_record(bytes(data[start:header_end]).decode("utf-8"))
    positions = _canonical_positions(header)
    records = _split_csv_body(data[body_start:], len(header))
    return _csv_table(records, positions, implied_records=implied_records)


def _skip_blank_lines(data: memoryview, position: int) -> int:
    """Offset of the first line holding more than whitespace (len(data) if none)."""
    while position < len(data):
        newline = _LINE_END.search(data, position)
        line_end = newline.start() if newline else len(data)
        if not _is_blank_line(data[position:line_end]):
            return position
        position = newline.end() if newline else len(data)
    return len(data)


def _is_blank_line(line: memoryview) -> bool:
    # The head settles nearly every line without decoding a long one in full.
    if bytes(line[:256]).decode("utf-8", "ignore").strip():
        return False
    return not bytes(line).decode("utf-8").strip()


def _first_record_bounds(data: memoryview, start: int) -> tuple[int, int]:
    """End of the first CSV record and start of the next one, quotes read as the csv module
    reads them: only a quote that opens a field starts a quoted value (in which line ends
    belong to the value and a doubled quote is a quote); any other quote is a character.
    """
    state = _FIELD_START
    previous_end = start
    for match in _CSV_SPECIAL.finditer(data, start):
        at = match.start()
        if at > previous_end and state in (_FIELD_START, _AFTER_QUOTED):
            state = _UNQUOTED  # ordinary characters: the field is not (or no longer) quoted
        previous_end = at + 1
        byte = data[at]
        if state == _QUOTED:
            if byte == 0x22:
                state = _AFTER_QUOTED
        elif byte == 0x22:
            if state == _FIELD_START:
                state = _QUOTED
            elif state == _AFTER_QUOTED:
                state = _QUOTED  # a doubled quote inside the quoted value
        elif byte == 0x2C:
            state = _FIELD_START
        else:
            after = at + 2 if data[at : at + 2] == b"\r\n" else at + 1
            return at, after
    return len(data), len(data)


def _csv_reader(lines: Iterable[str]) -> Any:  # a csv.reader (its type is private)
    # Fields of tens of MB are allowed; the csv module's default limit is 128 KiB.
    if csv.field_size_limit() < _CSV_MAX_BLOCK_SIZE:
        csv.field_size_limit(_CSV_MAX_BLOCK_SIZE)
    return csv.reader(lines, strict=False)


def _parse_record(text: str) -> list[str]:
    return next(_csv_reader(io.StringIO(text, newline="")), [])


def _is_blank_record(record: list[str]) -> bool:
    """A blank line: no field, or one field of whitespace only (even in a 1-column file)."""
    return not record or (len(record) == 1 and not record[0].strip())


def _canonical_positions(names: list[str]) -> dict[str, int]:
    """Column index of each canonical field present; a repeated one rejects the file."""
    positions: dict[str, int] = {}
    for index, name in enumerate(names):
        key = name.strip().lower()
        if key not in CANONICAL_FIELDS:
            continue
        if key in positions:
            raise FileRejected(
                f"repeated column {key} (columns {positions[key] + 1} and {index + 1})"
            )
        positions[key] = index
    return positions


def _split_csv_body(body: memoryview, width: int) -> _CsvRecords:
    if _skip_blank_lines(body, 0) >= len(body):
        # pyarrow refuses an input without rows; a header-only CSV is 0 rows.
        return _CsvRecords([pa.chunked_array([], pa.string())] * width)
    # In a text without quotes a physical line is a record, so pyarrow may skip malformed
    # records and go on: their places are then found by byte searches (_line_bad_records).
    data = np.frombuffer(body, dtype=np.uint8)
    unquoted = not (data == 0x22).any() and not (data == 0x00).any()
    skipped: list[str] | None = [] if unquoted else None
    columns = _parse_csv_fast(body, width, skipped)
    if columns is not None and not skipped:
        return _CsvRecords(columns)
    if columns is not None and skipped:
        found = _line_bad_records(data, width)
        if (
            found is not None
            and len(found.positions) == len(skipped)
            and found.total - len(found.positions) == len(columns[0])
        ):
            return _with_bad_records(columns, found)
    # Malformed records (or input pyarrow gave up on): the csv module finds them with
    # exact record numbers (Arrow does, in a text without quotes), and pyarrow still parses
    # the rest unless it disagrees.
    text = bytes(body).decode("utf-8")
    lines = None  # the physical lines, split once and only when the csv module needs them
    if '"' not in text and "\x00" not in text:
        bad = _unquoted_bad_records(text, width)
    else:
        lines = _PHYSICAL_LINE.findall(text)
        bad = _find_bad_records(lines, width)
    good = _parse_good_records(bad, width)
    if good is None:
        good = _transpose_good_records(lines or _PHYSICAL_LINE.findall(text), width)
    return _with_bad_records(good, bad)


def _parse_csv_fast(
    body: memoryview, width: int, skipped: list[str] | None = None
) -> list[Any] | None:
    """Parse with pyarrow; None when pyarrow fails or the file has a malformed record,
    unless ``skipped`` is given: then malformed records are left out and their texts
    appended to it."""
    names = [f"c{index}" for index in range(width)]

    def on_invalid_row(row: Any) -> str:
        # pyarrow cannot say where a bad row sits (no row number with quoted newlines),
        # so a real one sends the file to the csv module unless the caller can place it;
        # blank lines are no rows.
        try:
            if _is_blank_record(_parse_record(row.text)):
                return "skip"
        except csv.Error:
            return "error"
        if skipped is None:
            return "error"
        skipped.append(row.text)
        return "skip"

    # pyarrow drops a UTF-8 byte-order mark at the start of its input, here the first row's
    # (the file's own mark went with the header): a blank line first keeps it as text.
    data = b"\n" + bytes(body) if bytes(body[:3]) == codecs.BOM_UTF8 else body
    block_size = _CSV_BLOCK_SIZE
    while True:
        if skipped is not None:
            skipped.clear()  # a retry with a larger block meets the same records again
        try:
            table = pacsv.read_csv(
                pa.BufferReader(pa.py_buffer(data)),
                read_options=pacsv.ReadOptions(column_names=names, block_size=block_size),
                parse_options=pacsv.ParseOptions(
                    newlines_in_values=True, invalid_row_handler=on_invalid_row
                ),
                convert_options=pacsv.ConvertOptions(
                    column_types=dict.fromkeys(names, pa.string()),
                    strings_can_be_null=False,
                ),
            )
        except pa.ArrowInvalid as exc:
            whole = min(len(body) + 1, _CSV_MAX_BLOCK_SIZE)
            if "straddl" in str(exc) and block_size < whole:
                block_size = whole  # a record longer than a block: read it as one block
                continue
            return None
        except pa.ArrowException:
            return None
        if width == 1:
            # pyarrow keeps a whitespace-only line of a 1-column file as a row.
            table = table.filter(pc.is_valid(_cleaned(table.column(0))))
        return table.columns


def _csv_records(lines: list[str]) -> Iterator[tuple[list[str] | None, int, int]]:
    """Each record with the span of lines it came from; None for text csv gave up on."""
    reader = _csv_reader(lines)
    start = 0
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error:
            yield None, start, len(lines)
            return
        end = reader.line_num
        yield record, start, end
        start = end


def _find_bad_records(lines: list[str], width: int) -> _BadRecords:
    total = 0
    positions: list[int] = []
    texts: list[str] = []
    kept: list[str] = []
    kept_from = 0
    for record, start, end in _csv_records(lines):
        if record is not None and _is_blank_record(record):
            continue  # no record, as on the fast path
        if record is not None and len(record) == width:
            total += 1
            continue
        text = _record_text(lines[start:end])
        if not text.strip():
            continue
        positions.append(total)
        texts.append(text)
        total += 1
        kept.append("".join(lines[kept_from:start]))
        kept_from = end
    kept.append("".join(lines[kept_from:]))
    return _BadRecords(total, positions, texts, "".join(kept))


def _unquoted_bad_records(text: str, width: int) -> _BadRecords:
    """What :func:`_find_bad_records` finds, for a text without a quote or NUL character,
    with Arrow kernels instead of the csv module: each physical line is a record, its
    fields the text between commas (as csv.reader reads such a line), and a line with one
    field of whitespace only is blank (no record)."""
    lines = pc.list_flatten(
        pc.split_pattern_regex(pa.array([text], pa.large_string()), r"\r\n|\r|\n")
    )
    fields = pc.add(pc.count_substring(lines, ","), 1)
    blank = pc.and_(
        pc.equal(fields, 1), pc.equal(pc.utf8_trim(lines, characters=_PY_WHITESPACE), "")
    )
    records = pc.filter(lines, pc.invert(blank))
    bad = pc.not_equal(pc.filter(fields, pc.invert(blank)), width)
    good = pc.filter(records, pc.invert(bad))
    joined = pc.binary_join(
        pa.LargeListArray.from_arrays(pa.array([0, len(good)], pa.int64()), good),
        pa.scalar("\n", pa.large_string()),
    )
    return _BadRecords(
        total=len(records),
        positions=np.flatnonzero(bad.to_numpy(zero_copy_only=False)).tolist(),
        texts=pc.filter(records, bad).to_pylist(),
        good_text=(joined[0].as_py() or "") + "\n" if len(good) else "",
    )


# Lines of one field (blank or malformed) whose text is decoded to tell blank from malformed;
# with more of them (a one-column file), _line_bad_records leaves the search to Arrow kernels.
_MAX_ONE_FIELD_LINES = 10_000


def _line_bad_records(data: np.ndarray, width: int) -> _BadRecords | None:
    """What :func:`_unquoted_bad_records` finds, from the bytes of a text without quotes,
    with byte searches instead of splitting the text into lines: the fields of a line are
    its commas plus one. None (the caller searches otherwise) when a line ends in a lone
    carriage return or too many lines have a single field. ``good_text`` is left empty:
    the caller has the good records already."""
    returns = int(np.count_nonzero(data == 0x0D))
    newlines = np.flatnonzero(data == 0x0A)
    if returns and returns != int(np.count_nonzero(data[newlines[newlines > 0] - 1] == 0x0D)):
        return None  # a carriage return that is not part of "\r\n" also ends a line
    starts = np.concatenate(([0], newlines + 1))
    stops = np.concatenate((newlines, [len(data)]))
    commas = np.flatnonzero(data == 0x2C)
    fields = np.searchsorted(commas, stops) - np.searchsorted(commas, starts) + 1
    single = np.flatnonzero(fields == 1)
    if len(single) > _MAX_ONE_FIELD_LINES:
        return None

    def text(line: int) -> str:
        return data[starts[line] : stops[line]].tobytes().decode("utf-8")

    blank = np.zeros(len(fields), dtype=bool)
    for line in single.tolist():
        blank[line] = not text(line).strip()
    records = np.flatnonzero(~blank)
    bad = fields[records] != width
    texts = [text(line).removesuffix("\r") for line in records[bad].tolist()]
    return _BadRecords(
        total=len(records), positions=np.flatnonzero(bad).tolist(), texts=texts, good_text=""
    )


def _record_text(lines: list[str]) -> str:
    """A record's text as in the file, without its final line ending."""
    return "".join(lines).removesuffix("\n").removesuffix("\r")


def _parse_good_records(bad: _BadRecords, width: int) -> list[Any] | None:
    """pyarrow on the text without the bad records; None unless it sees the same records."""
    expected = bad.total - len(bad.positions)
    if expected == 0:
        return [pa.chunked_array([], pa.string())] * width
    columns = _parse_csv_fast(memoryview(bad.good_text.encode("utf-8")), width)
    if columns is None or len(columns[0]) != expected:
        return None
    return columns


def _transpose_good_records(lines: list[str], width: int) -> list[Any]:
    """The well-formed records as columns, with the csv module only (slow but exact)."""
    with _gc_paused():
        good = [
            record
            for record, _, _ in _csv_records(lines)
            if record is not None and len(record) == width and not _is_blank_record(record)
        ]
        values = zip(*good, strict=True) if good else [()] * width
        return [pa.chunked_array([pa.array(column, pa.string())]) for column in values]


def _with_bad_records(good: list[Any], bad: _BadRecords) -> _CsvRecords:
    """Interleave null rows for the bad records at their record positions."""
    is_bad = np.zeros(bad.total, dtype=bool)
    is_bad[bad.positions] = True
    take = pa.array(np.cumsum(~is_bad) - 1, mask=is_bad)
    texts: list[str | None] = [None] * bad.total
    for position, text in zip(bad.positions, bad.texts, strict=True):
        texts[position] = text
    return _CsvRecords([column.take(take) for column in good], pa.array(texts, pa.string()))


def _csv_table(
    records: _CsvRecords, positions: dict[str, int], *, implied_records: bool = False
) -> pa.Table:
    columns = records.columns
    rows = len(columns[0])
    # Malformed records are null in every column, so their fields come out null.
    trimmed = {name: _trimmed(columns[positions[name]]) for name in positions}
    fields = {
        name: _empty_as_null(trimmed[name]) if name in positions else _nulls(rows)
        for name in CANONICAL_FIELDS
    }
    if implied_records and _records_implied(columns, positions, trimmed):
        raw = _nulls(rows)
    else:
        raw = _csv_line(columns)
    if records.malformed_text is None:
        return _output_table(rows, fields, raw, _falses(rows))
    raw = pc.coalesce(records.malformed_text, raw)
    return _output_table(rows, fields, raw, pc.is_valid(records.malformed_text))


def _records_implied(
    columns: list[Any], positions: dict[str, int], trimmed: dict[str, Any]
) -> bool:
    """Whether every well-formed record's text (as :func:`_csv_line` writes it) is its
    canonical fields joined by commas: the columns are the canonical fields in order, and
    no value was stripped or would be quoted."""
    if len(columns) != len(CANONICAL_FIELDS) or any(
        positions.get(name) != i for i, name in enumerate(CANONICAL_FIELDS)
    ):
        return False
    return not any(
        _contains_any(_value_bytes(column), _CSV_SPECIAL_BYTES) for column in columns
    ) and all(
        pc.all(pc.equal(trimmed[name], columns[positions[name]])).as_py() is not False
        for name in CANONICAL_FIELDS
    )


def record_text_sql(fields: dict[str, str]) -> str:
    """SQL for a row's ``raw_record`` where :func:`read_landing_file` left it implied (null):
    ``fields`` maps each canonical field to the SQL expression of its value."""
    joined = ", ".join(f"coalesce({fields[name]}, '')" for name in CANONICAL_FIELDS)
    return f"concat_ws(',', {joined})"


def _csv_line(columns: list[Any]) -> Any:
    """Each row re-serialised as one CSV line with minimal quoting (as csv.writer does)."""
    texts = [_csv_field(column) for column in columns]
    if len(texts) == 1:
        return texts[0]
    return pc.binary_join_element_wise(*texts, ",")


def _csv_field(column: Any) -> Any:
    if not _contains_any(_value_bytes(column), _CSV_SPECIAL_BYTES):
        return column
    needs_quotes = pc.match_substring_regex(column, _CSV_NEEDS_QUOTES)
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(column, '"', '""'), '"', "")
    return pc.if_else(needs_quotes, quoted, column)


def _value_bytes(column: Any) -> list[bytes]:
    """The raw value bytes of a string column's chunks, for quick byte searches.

    A byte search (memchr speed) is ~25x faster than a regex over every value; bytes
    outside a sliced array can only give a false positive, which costs the exact work.
    """
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    return [data.to_pybytes() for chunk in chunks if (data := chunk.buffers()[2]) is not None]


def _contains_any(data: list[bytes], needles: tuple[bytes, ...]) -> bool:
    return any(needle in chunk for chunk in data for needle in needles)


# --- JSON and NDJSON ----------------------------------------------------------------


def _read_json_array(content: bytes) -> pa.Table:
    text = _decode_text(content)
    if not text.strip():
        raise FileRejected("empty file")
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise FileRejected(f"not valid JSON: {_one_line(exc)}") from None
    if not isinstance(document, list):
        raise FileRejected(
            f"a .json file must hold one array of objects, not {_json_kind(document)}"
        )
    rows = _JsonRows()
    with _gc_paused():
        for index, element in enumerate(document, start=1):
            if type(element) is dict:
                rows.add_object(index, element, _compact_json(element))
            else:
                rows.add_malformed(index, _compact_json(element))
        return rows.to_table()


def _read_json_lines(content: bytes) -> pa.Table:
    text = _decode_text(content)
    if not text.strip():
        raise FileRejected("empty file")
    rows = _JsonRows()
    loads = json.loads
    with _gc_paused():
        for number, line in enumerate(text.split("\n"), start=1):
            if line.endswith("\r"):
                line = line[:-1]
            if not line or line.isspace():
                continue  # skipped, but it still counts as a line
            try:
                element = loads(line)
            except (ValueError, RecursionError):
                rows.add_malformed(number, line)
                continue
            if type(element) is dict:
                rows.add_object(number, element, line)
            else:
                rows.add_malformed(number, line)
        return rows.to_table()


def _json_kind(value: object) -> str:
    kinds = {dict: "an object", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number")


def _compact_json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _json_value_text(value: object) -> str | None:
    if isinstance(value, str) or value is None:
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # repr keeps "60.0" apart from "60", which duration_seconds must refuse.
        return repr(value)
    return _compact_json(value)


_NO_KEY = None  # never a key of a JSON object, so dict.get(_NO_KEY) gives None
_MAX_KEY_PLANS = 1024


class _JsonRows:
    """Accumulates JSON rows; the per-object step is kept to a few C-level calls.

    Objects of one file nearly always share their keys, so the mapping from keys to
    canonical fields (a "plan") is worked out once per distinct key sequence.
    """

    def __init__(self) -> None:
        self.source_rows: list[int] = []
        self.raw: list[str] = []
        self.malformed: list[bool] = []
        self.values: list[tuple[Any, ...]] = []
        self._plans: dict[tuple[str, ...], tuple[str | None, ...] | None] = {}

    def add_object(self, source_row: int, element: dict[Any, Any], raw: str) -> None:
        keys = tuple(element)
        if keys in self._plans:
            plan = self._plans[keys]
        else:
            plan = _key_plan(keys)
            if len(self._plans) < _MAX_KEY_PLANS:
                self._plans[keys] = plan
        if plan is None:
            self.values.append(_values_first_non_empty(element))
        else:
            self.values.append(tuple(map(element.get, plan)))
        self.source_rows.append(source_row)
        self.raw.append(raw)
        self.malformed.append(False)

    def add_malformed(self, source_row: int, raw: str) -> None:
        self.values.append(_NO_VALUES)
        self.source_rows.append(source_row)
        self.raw.append(raw)
        self.malformed.append(True)

    def to_table(self) -> pa.Table:
        columns = zip(*self.values, strict=True) if self.values else [()] * len(CANONICAL_FIELDS)
        fields = {
            name: _cleaned(_json_text_array(column))
            for name, column in zip(CANONICAL_FIELDS, columns, strict=True)
        }
        return pa.table(
            {
                "source_row": pa.array(self.source_rows, pa.int64()),
                **fields,
                "raw_record": _raw_text_array(self.raw),
                "malformed": pa.array(self.malformed, pa.bool_()),
            }
        )


_NO_VALUES: tuple[None, ...] = (None,) * len(CANONICAL_FIELDS)


def _key_plan(keys: tuple[str, ...]) -> tuple[str | None, ...] | None:
    """The key giving each canonical field; None when two keys give the same field."""
    plan: dict[str, str] = {}
    for key in keys:
        field = key.strip().lower()
        if field not in CANONICAL_FIELDS:
            continue
        if field in plan:
            return None
        plan[field] = key
    return tuple(plan.get(name, _NO_KEY) for name in CANONICAL_FIELDS)


def _values_first_non_empty(element: dict[str, Any]) -> tuple[Any, ...]:
    """For an object with e.g. both "Call_ID" and "call_id ": the first non-empty wins."""
    found: dict[str, Any] = {}
    for key, value in element.items():
        field = key.strip().lower()
        if field not in CANONICAL_FIELDS:
            continue
        text = _json_value_text(value)
        if field not in found or (text is not None and text.strip() and not found[field][1]):
            found[field] = (value, bool(text and text.strip()))
    return tuple(found[name][0] if name in found else None for name in CANONICAL_FIELDS)


def _json_text_array(values: tuple[Any, ...]) -> pa.Array:
    """JSON values of one field as text; only a column holding non-strings pays a loop."""
    try:
        return pa.array(values, pa.string())
    except pa.ArrowTypeError:
        texts = [value if type(value) is str else _json_value_text(value) for value in values]
        return _string_array(texts, _scrub_value)
    except UnicodeEncodeError:
        return _string_array([_json_value_text(value) for value in values], _scrub_value)


def _string_array(values: list[str | None] | list[str], scrub: Callable[[str], str]) -> pa.Array:
    """Strings to Arrow; JSON escapes can yield lone surrogates, which UTF-8 cannot hold."""
    try:
        return pa.array(values, pa.string())
    except UnicodeEncodeError:
        return pa.array([None if v is None else scrub(v) for v in values], pa.string())


def _raw_text_array(texts: list[str]) -> pa.Array:
    """Long strings to Arrow via bytes: ~3x faster than pyarrow's own str conversion."""
    try:
        encoded = list(map(str.encode, texts))
    except UnicodeEncodeError:  # lone surrogates from JSON escapes
        encoded = [_scrub_raw(text).encode() for text in texts]
    return pa.array(encoded, pa.binary()).cast(pa.string())


def _scrub_value(text: str) -> str:
    return _LONE_SURROGATE.sub("\ufffd", text)


def _scrub_raw(text: str) -> str:
    # Gives back the "\ud800" escape the JSON text most likely had.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# --- Parquet ------------------------------------------------------------------------


def _read_parquet(content: bytes) -> pa.Table:
    try:
        table = pq.ParquetFile(pa.BufferReader(content)).read()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise FileRejected(f"not a readable Parquet file: {_one_line(exc)}") from None
    positions = _canonical_positions(table.column_names)
    rows = table.num_rows
    # Each column is rendered once: for its field and for the raw record.
    texts = [_as_text(column) for column in table.columns]
    fields = {
        name: _cleaned(texts[positions[name]]) if name in positions else _nulls(rows)
        for name in CANONICAL_FIELDS
    }
    raw = _json_objects(table, texts)
    return _output_table(rows, fields, raw, _falses(rows))


def _as_text(column: pa.ChunkedArray) -> Any:
    """A column's values as text: integers as digits, floats with a visible fraction,
    booleans as true/false, timestamps and dates in ISO 8601, nested values as JSON."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        return _as_text(column.cast(kind.value_type))
    if pa.types.is_null(kind):
        return _nulls(len(column))
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or _is_string_view(kind):
        return column.cast(pa.string())
    if pa.types.is_floating(kind):
        return _float_text(column)
    if pa.types.is_timestamp(kind):
        return _timestamp_text(column)
    if (
        pa.types.is_integer(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_decimal(kind)
        or pa.types.is_date(kind)
        or pa.types.is_time(kind)
    ):
        with contextlib.suppress(pa.ArrowException):  # e.g. a decimal Arrow cannot cast
            return column.cast(pa.string())
    return _python_text(column, _python_value_text)


def _is_string_view(kind: pa.DataType) -> bool:
    check = getattr(pa.types, "is_string_view", None)
    return bool(check and check(kind))


def _float_text(column: pa.ChunkedArray) -> Any:
    if pa.types.is_float16(column.type):
        column = column.cast(pa.float32())
    text = column.cast(pa.string())
    # Arrow writes 60.0 as "60"; keep it visibly a float, as Python's repr does.
    whole = pc.match_substring_regex(text, r"^-?\d+$")
    return pc.if_else(whole, pc.binary_join_element_wise(text, ".0", ""), text)


def _timestamp_text(column: pa.ChunkedArray) -> Any:
    """ISO 8601; a zoned column as its UTC instant with "+00:00", a naive one without."""
    kind = column.type
    # Rendering in the column's own zone costs ~20x more (a zone lookup per value);
    # downstream only needs the instant.
    wall = column.cast(pa.timestamp(kind.unit))
    # Whole seconds everywhere: drop Arrow's ".000000" tail; if some value has a
    # fraction the cast fails and every value keeps its fraction digits.
    with contextlib.suppress(pa.ArrowInvalid):
        wall = wall.cast(pa.timestamp("s"))
    text = pc.replace_substring(wall.cast(pa.string()), " ", "T", max_replacements=1)
    return pc.binary_join_element_wise(text, "+00:00", "") if kind.tz is not None else text


def _python_text(column: pa.ChunkedArray, render: Callable[[Any], str]) -> pa.Array:
    # Nested and exotic types only: no Arrow kernel renders them, so one Python step a value.
    return pa.array(
        [None if value is None else render(value) for value in column.to_pylist()], pa.string()
    )


def _python_value_text(value: Any) -> str:
    """A field's text for a value no Arrow cast renders: nested ones as compact JSON."""
    if isinstance(value, list | tuple | dict):
        return _python_json_text(value)
    return value if isinstance(value, str) else str(_json_default(value))


def _python_json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _json_objects(table: pa.Table, texts: list[Any]) -> Any:
    """Each row as a compact JSON object of its original columns, built column-wise."""
    if table.num_columns == 0:
        return pa.array(["{}"] * table.num_rows, pa.string())
    # One join over '{"name":', value, ',"next":', value, ..., '}' does a single pass.
    pieces: list[Any] = []
    for index, (name, column) in enumerate(zip(table.column_names, table.columns, strict=True)):
        pieces.append(("{" if index == 0 else ",") + _compact_json(name) + ":")
        pieces.append(pc.fill_null(_json_literal(column, texts[index]), "null"))
    pieces.append("}")
    return pc.binary_join_element_wise(*pieces, "")


def _json_literal(column: pa.ChunkedArray, text: Any) -> Any:
    """JSON literals of a column, given its values already rendered by _as_text."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_null(kind):
        return text
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind) or pa.types.is_decimal(kind):
        return text
    if pa.types.is_floating(kind):
        return _json_float(column, text)
    if (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or _is_string_view(kind)
        or pa.types.is_timestamp(kind)
        or pa.types.is_date(kind)
        or pa.types.is_time(kind)
    ):
        return _json_string(text)
    return _python_text(column, _python_json_text)


def _json_float(column: pa.ChunkedArray, text: Any) -> Any:
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if pc.all(pc.is_finite(column)).as_py() is not False:
        return text
    # The spellings Python's json module uses for values JSON has no literal for.
    for arrow_text, json_text in (("nan", "NaN"), ("inf", "Infinity"), ("-inf", "-Infinity")):
        text = pc.if_else(pc.equal(text, arrow_text), json_text, text)
    return text


def _json_string(text: Any) -> Any:
    """JSON string literals, escaped as json.dumps(ensure_ascii=False) escapes them."""
    data = _value_bytes(text)
    if _contains_any(data, _JSON_SPECIAL_BYTES):
        text = pc.replace_substring(text, "\\", "\\\\")
        text = pc.replace_substring(text, '"', '\\"')
        for code in range(0x20):
            if _contains_any(data, (bytes([code]),)):
                escape = _JSON_SHORT_ESCAPES.get(chr(code), f"\\u{code:04x}")
                text = pc.replace_substring(text, chr(code), escape)
    return pc.binary_join_element_wise('"', text, '"', "")


# --- shared -------------------------------------------------------------------------


def _cleaned(column: Any) -> Any:
    """Strip as str.strip() does; what is left empty becomes null."""
    return _empty_as_null(_trimmed(column))


def _trimmed(column: Any) -> Any:
    return pc.utf8_trim(column, characters=_PY_WHITESPACE)


def _empty_as_null(trimmed: Any) -> Any:
    return pc.if_else(pc.equal(trimmed, ""), _NULL_STRING, trimmed)


def _nulls(rows: int) -> pa.Array:
    return pa.nulls(rows, pa.string())


def _falses(rows: int) -> pa.Array:
    return pa.repeat(pa.scalar(False), rows) if rows else pa.array([], pa.bool_())


def _output_table(rows: int, fields: dict[str, Any], raw: Any, malformed: Any) -> pa.Table:
    return pa.table(
        {
            "source_row": pa.array(np.arange(1, rows + 1, dtype=np.int64)),
            **fields,
            "raw_record": raw,
            "malformed": malformed,
        }
    )


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while millions of objects are kept alive.

    Otherwise it rescans them again and again (several times slower); the code run
    under it builds no reference cycles.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) > _MAX_REASON_CHARS:
        text = text[: _MAX_REASON_CHARS - 3] + "..."
    return text
