"""Fuzzing: hypothesis builds CSV and JSON landing files from good and hostile values, breaks
them (encodings, gzip, truncation, inserted, deleted, flipped and NUL bytes, wrong column
counts, wrong JSON types, deep nesting), and each batch of them goes through the steps
``cdr-pipeline process`` starts with: ``ingest.read_batch_files`` then
``ingest.validate_batch_files``, into one warehouse.

For every file: it is either refused as a whole with one of the contract's file-level
reasons (and that reason is true of the bytes: an independent check decodes, parses or
inflates them), or processed, with rows read = accepted + refused, every row read either
accepted or refused (never both), every refusal a detail naming the file and the row, and
the row count what Python's own json / csv modules find. No other exception escapes, and
memory stays bounded.

CI: 1,200 files (``FUZZ_EXAMPLES`` batches of ``FILES_PER_BATCH``); full
(``CDR_RELIABILITY_FULL=1``): ten times as many. ``--hypothesis-seed`` replays a run.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import random
import re
import resource
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdr_assets.lib import ingest
from cdr_assets.lib.readers import CANONICAL_FIELDS
from cdr_assets.lib.schemas import REASONS
from cdr_assets.lib.settings import Settings
from cdr_assets.lib.warehouse import Warehouse
from cdr_assets_tests.reliability.harness import FULL, SHIPPED_RATES

FILES_PER_BATCH = 20
FUZZ_EXAMPLES = {"csv": 30, "json": 30}  # batches per test in CI; x10 in the full variant
MAX_FILE_BYTES = 1 << 20
MEMORY_BUDGET_MB = 768
NUL_SNIFF_BYTES = 4096

FILE_REASONS = [
    re.compile(r"empty file"),
    re.compile(
        r"not valid UTF-8 text \(byte 0x(?P<byte>[0-9a-f]{2}) at offset (?P<offset>\d+)"
        r"(?P<nul>; NUL bytes as in UTF-16 without a byte-order mark)?\)"
    ),
    re.compile(r"not valid UTF-16 text \(.+ at offset \d+\)"),
    re.compile(r"repeated column (?P<column>\w+) \(columns (?P<first>\d+) and (?P<second>\d+)\)"),
    re.compile(r"not valid JSON: .+"),
    re.compile(r"a \.json file must hold one array of objects, not .+"),
    re.compile(r"broken gzip compression: .+"),
    re.compile(r"uncompressed size exceeds the limit of \d+ bytes"),
]

# --- values --------------------------------------------------------------------------------

NUMBERS = [
    "+442079460958",
    "+12025550123",
    "0044 20 7946 0958",
    "+33 1 42 68 53 00",
    "07911123456",
    "+4412",
    "+999123",
    "abc",
    "+80012345678",
    "+449999999999",
]
TIMES = [
    "2026-11-20T10:00:00Z",
    "2026-11-20 10:00",
    "2026-11-20T10:00:00,5+02:00",
    "2026-11-20T10:00:00.123456789Z",
    "2024-02-29T00:00:00Z",
    "2026-02-29T00:00:00Z",
    "1900-01-01T00:00:00Z",
    "9999-12-31T23:59:59-01:00",
    "0001-01-01T00:00:00+01:00",
    "2026-10-25T01:30:00",
    "20261120T100000Z",
    "yesterday",
    "1763632800",
    "2026-11-20",
]
HOSTILE = [
    "",
    " ",
    "\x00",
    "\r",
    "\n",
    "\r\n",
    '"',
    ",",
    "'",
    "\ufeff",
    "\u2028",
    "\x85",
    "é",
    "☎",
    "=1+1",
    "\t",
    "NULL",
    "\\",
    '""',
    "300.0",
    "3e2",
    "-5",
    "1" * 19,
    "0" * 20 + "60",
]
# Hypothesis draws each file's shape (columns, rows, quoting, line ends, encoding, gzip,
# mutations) and a seed; the values come from the seed, so that an example is a few dozen
# choices rather than thousands (hypothesis then generates, and shrinks, quickly).
GOOD: dict[str, Callable[[random.Random], str]] = {
    "call_id": lambda rng: f"c{rng.randrange(10_000)}",
    "caller_number": lambda rng: rng.choice(NUMBERS),
    "called_number": lambda rng: rng.choice(NUMBERS),
    "start_time": lambda rng: rng.choice(TIMES),
    "end_time": lambda rng: rng.choice(TIMES),
    "duration_seconds": lambda rng: str(rng.randint(-5, 90_000)),
    "carrier_id": lambda rng: rng.choice(["carrier_001", "carrier_002", "carrier_009", "Télécom"]),
    "call_type": lambda rng: rng.choice(["local", "National", "INTERNATIONAL", "mobile"]),
    "country_code": lambda rng: rng.choice(["GB", "gb", "FR", "XX", "UK", "XK"]),
    "disposition": lambda rng: rng.choice(["ANSWERED", "busy", "No_Answer", "maybe"]),
}
CHARACTERS = "abcXYZ019 ,;\"'\t\r\n\x00\x1f\x7f\x85\xa0é☎😀\u2028\ufeff\\{}[]:=+-@"
LONG_PIECES = ["x", 'a,"b"\n', "é☎ ", "\x00\r\n"]


def short_text(rng: random.Random) -> str:
    return "".join(rng.choice(CHARACTERS) for _ in range(rng.randrange(13)))


def value(rng: random.Random, column: str) -> str:
    """A cell: mostly a plausible value of the column, else hostile, random or 1-30 kB long."""
    pick = rng.randrange(20)
    if pick < 13:
        return GOOD.get(column.strip().lower(), short_text)(rng)
    if pick < 17:
        return rng.choice(HOSTILE)
    if pick < 19:
        return short_text(rng)
    piece = rng.choice(LONG_PIECES)
    return (piece * 30_000)[: rng.randint(1_000, 30_000)]


NAMES = [*CANONICAL_FIELDS, "note", "extra", "", 'no"te', '"']


def column_name(rng: random.Random) -> str:
    name = rng.choice(NAMES)
    return rng.choice([name, name.upper(), f" {name} ", name.title()])


@dataclass(frozen=True)
class Fuzzed:
    kind: str  # csv, json, ndjson
    suffix: str
    data: bytes


MUTATIONS = st.lists(
    st.tuples(
        st.sampled_from(["insert", "delete", "flip", "truncate", "duplicate", "nul", "bom"]),
        st.integers(0, 1 << 16),
        st.binary(min_size=1, max_size=6),
    ),
    max_size=3,
)


def mutate(data: bytes, mutations: list[tuple[str, int, bytes]]) -> bytes:
    for kind, at, payload in mutations:
        at = at % (len(data) + 1)
        if kind == "insert":
            data = data[:at] + payload + data[at:]
        elif kind == "delete":
            data = data[:at] + data[at + len(payload) :]
        elif kind == "flip" and at < len(data):
            data = data[:at] + bytes([data[at] ^ payload[0]]) + data[at + 1 :]
        elif kind == "truncate":
            data = data[:at]
        elif kind == "duplicate":
            data = data[:at] + data[at : at + 64] + data[at:]
        elif kind == "nul":
            data = data[:at] + b"\x00" + data[at:]
        elif kind == "bom":
            data = data[:at] + codecs.BOM_UTF8 + data[at:]
    return data


ENCODINGS = ["utf-8"] * 9 + ["utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "latin-1"]


@st.composite
def encoded(draw: st.DrawFn, text: str, kind: str, suffix: str) -> Fuzzed:
    encoding = draw(st.sampled_from(ENCODINGS))
    data = text.encode(encoding, errors="replace")
    if draw(st.integers(0, 2)) == 0:
        data = mutate(data, draw(MUTATIONS))
    if draw(st.integers(0, 4)) == 0:
        data = gzip.compress(data)
        suffix += ".gz"
        if draw(st.integers(0, 3)) == 0:
            data = mutate(data, draw(MUTATIONS))
    return Fuzzed(kind, suffix, data)


SEEDS = st.integers(0, 2**32 - 1)


@st.composite
def csv_files(draw: st.DrawFn) -> Fuzzed:
    rng = random.Random(draw(SEEDS))
    header: list[str] = []
    for _ in range(draw(st.integers(1, 11))):
        name = column_name(rng)
        if name.strip().lower() not in {h.strip().lower() for h in header}:
            header.append(name)
    if draw(st.integers(0, 9)) == 0:  # a canonical column named twice
        header.append(rng.choice(CANONICAL_FIELDS).upper())
    wrong_counts = draw(st.integers(0, 3)) == 0
    rows = []
    for _ in range(draw(st.integers(0, 15))):
        values = [value(rng, name) for name in header]
        if wrong_counts and rng.randrange(4) == 0:
            values = values[: rng.randrange(len(values) + 1)] or [*values, "x", "y"]
        rows.append(values)
    out = io.StringIO()
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    quoting = draw(st.sampled_from(["none", "minimal", "minimal", "all"]))
    if quoting == "none":  # delimiters and quotes in values are not escaped
        out.write(newline.join(",".join(r) for r in [header, *rows]) + newline)
    else:
        writer = csv.writer(
            out,
            lineterminator=newline,
            quoting=csv.QUOTE_ALL if quoting == "all" else csv.QUOTE_MINIMAL,
        )
        writer.writerow(header)
        for values in rows:
            if rng.randrange(10) == 0:
                out.write(rng.choice(["", " ", "\t"]) + newline)  # a blank line
            writer.writerow(values)
    return draw(encoded(out.getvalue(), "csv", ".csv"))


def json_scalar(rng: random.Random) -> Any:
    return rng.choice(
        [
            None,
            rng.random() < 0.5,
            rng.randint(-(10**20), 10**20),
            rng.choice([0.0, -0.0, 60.0, 3e2, 1e400, -1e400, float("nan"), rng.random()]),
            short_text(rng),
        ]
    )


def json_value(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.randrange(8)
    if depth < 3 and pick == 0:
        return [json_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if depth < 3 and pick == 1:
        return {short_text(rng): json_value(rng, depth + 1) for _ in range(rng.randrange(4))}
    return json_scalar(rng)


def json_element(rng: random.Random) -> Any:
    if rng.randrange(10) == 0:
        return json_value(rng)  # not an object: a malformed record
    keys = [column_name(rng) for _ in range(rng.randrange(12))]
    return {k: value(rng, k) if rng.random() < 0.7 else json_value(rng) for k in keys}


@st.composite
def json_files(draw: st.DrawFn) -> Fuzzed:
    rng = random.Random(draw(SEEDS))
    elements = [json_element(rng) for _ in range(draw(st.integers(0, 15)))]
    kind = draw(st.sampled_from(["json", "ndjson", "jsonl"]))
    ascii_only = draw(st.booleans())
    depth = draw(st.sampled_from([0, 0, 0, 0, 50, 2_000, 60_000]))
    if kind == "json":
        text = json.dumps(
            elements, ensure_ascii=ascii_only, indent=draw(st.sampled_from([None, 1]))
        )
        if depth:
            text = text[:-1] + ("," if elements else "") + "[" * depth + "]" * depth + "]"
        return draw(encoded(text, "json", ".json"))
    lines = [json.dumps(e, ensure_ascii=ascii_only) for e in elements]
    for _ in range(draw(st.integers(0, 3))):
        at = rng.randrange(len(lines) + 1)
        lines.insert(at, rng.choice(["", "  ", "{broken", "[1, 2", "nul\x00l"]))
    if depth:
        lines.append("[" * depth + "]" * depth)
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    return draw(encoded(newline.join(lines), "ndjson", "." + kind))


# --- independent checks -----------------------------------------------------------------


def inflate(data: bytes, gz: bool) -> bytes | None:
    if not gz:
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, OSError, zlib.error):
        return None


def decode(content: bytes) -> str | None:
    """The text as the contract reads it, or None when it is not UTF-8 / BOM'd UTF-16."""
    try:
        if content.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return content.decode("utf-16")
        return content.removeprefix(codecs.BOM_UTF8).decode("utf-8")
    except UnicodeDecodeError:
        return None


def csv_records(text: str) -> tuple[list[str], int] | None:
    """Header and number of non-blank records, as Python's csv module reads the text."""
    lines = re.findall(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z", text)
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        return None
    reader = csv.reader(lines, strict=False)
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        return None
    count = 0
    try:
        for record in reader:
            if record and not (len(record) == 1 and not record[0].strip()):
                count += 1
    except csv.Error:
        return header, -1  # the csv module gave up (e.g. a NUL byte): no oracle
    return header, count


def ndjson_lines(text: str) -> tuple[int, int]:
    rows = malformed = 0
    for line in text.split("\n"):
        line = line.removesuffix("\r")
        if not line or line.isspace():
            continue
        rows += 1
        try:
            if type(json.loads(line)) is not dict:
                malformed += 1
        except (ValueError, RecursionError):
            malformed += 1
    return rows, malformed


@dataclass
class Outcome:
    name: str
    landed: dict[str, Any]
    rejected: dict[int, dict[str, Any]] = field(default_factory=dict)
    accepted: set[int] = field(default_factory=set)
    raw: list[int] = field(default_factory=list)
    malformed: set[int] = field(default_factory=set)


def check_refusal(fuzzed: Fuzzed, reason: str, content: bytes | None) -> None:
    """The reason given for refusing a file is true of its bytes."""
    match = next((m for p in FILE_REASONS if (m := p.fullmatch(reason))), None)
    assert match is not None, f"not a file-level reason of the contract: {reason!r}"
    if reason.startswith("broken gzip"):
        assert content is None
        return
    if reason.startswith("uncompressed size"):
        assert content is not None and len(content) > MAX_FILE_BYTES
        return
    assert content is not None
    text = decode(content)
    if reason.startswith("not valid UTF-8"):
        offset = int(match["offset"])
        assert content[offset] == int(match["byte"], 16)
        if match["nul"]:
            assert content[offset] == 0 and offset < NUL_SNIFF_BYTES + 3
        else:
            assert text is None
            start = 3 if content.startswith(codecs.BOM_UTF8) else 0
            content[start:offset].decode("utf-8")  # everything before the named byte is good
    elif reason.startswith("not valid UTF-16"):
        assert text is None
    elif reason == "empty file":
        assert text is not None and not text.strip()
    elif reason.startswith("repeated column"):
        assert text is not None and fuzzed.kind == "csv"
        parsed = csv_records(text)
        assert parsed is not None
        header = [h.strip().lower() for h in parsed[0]]
        first, second = int(match["first"]), int(match["second"])
        assert header[first - 1] == header[second - 1] == match["column"]
    elif reason.startswith("not valid JSON"):
        assert text is not None and fuzzed.kind == "json"
        with pytest.raises((ValueError, RecursionError)):
            json.loads(text)
    elif reason.startswith("a .json file"):
        assert text is not None and fuzzed.kind == "json"
        assert not isinstance(json.loads(text), list)


def check_processed(fuzzed: Fuzzed, outcome: Outcome, content: bytes | None) -> None:
    landed = outcome.landed
    read, accepted, refused = (landed[k] for k in ("rows_read", "rows_accepted", "rows_rejected"))
    assert read == accepted + refused
    assert refused == len(outcome.rejected) and accepted == len(outcome.accepted)
    assert not set(outcome.rejected) & outcome.accepted
    assert sorted([*outcome.rejected, *outcome.accepted]) == sorted(outcome.raw)
    assert len(set(outcome.raw)) == len(outcome.raw) and all(n >= 1 for n in outcome.raw)
    order = {reason: i for i, reason in enumerate(REASONS)}
    for number, refusal in outcome.rejected.items():
        reasons = list(refusal["reasons"])
        assert reasons and set(reasons) <= set(REASONS)
        assert reasons == sorted(reasons, key=order.__getitem__)
        assert refusal["detail"] == f"{outcome.name} row {number}: {', '.join(reasons)}"
        if number in outcome.malformed:
            assert reasons == ["malformed_record"]
        else:
            assert "malformed_record" not in reasons
    # The row count is what Python's own parsers find.
    text = decode(content) if content is not None else None
    assert text is not None, "a processed file must be UTF-8 or UTF-16 with a byte-order mark"
    if fuzzed.kind == "json":
        document = json.loads(text)
        assert read == len(document)
        assert len(outcome.malformed) == sum(1 for e in document if type(e) is not dict)
    elif fuzzed.kind == "ndjson":
        assert (read, len(outcome.malformed)) == ndjson_lines(text)
    else:
        parsed = csv_records(text)
        assert parsed is not None
        if parsed[1] >= 0:
            assert read == parsed[1]


# --- the bench ------------------------------------------------------------------------------


@dataclass
class Bench:
    root: Path
    warehouse: Warehouse
    batches: int = 0
    files: int = 0
    refused: int = 0
    rows: int = 0

    def run(self, files: list[Fuzzed]) -> None:
        self.batches += 1
        batch_id = f"fuzz{self.batches:06d}"
        landing = self.root / "landing" / batch_id
        landing.mkdir(parents=True)
        names = []
        for number, fuzzed in enumerate(files):
            # Names unique in the warehouse: its batches stay unfinished (never deduplicated),
            # and a name an unfinished batch recorded is left to that batch.
            name = f"{self.batches:06d}-{number:02d}-{fuzzed.kind}{fuzzed.suffix}"
            (landing / name).write_bytes(fuzzed.data)
            names.append(name)
        settings = Settings(
            landing_dir=landing,
            rates_dir=SHIPPED_RATES,
            warehouse_dir=self.warehouse.root,
            max_file_bytes=MAX_FILE_BYTES,
        )
        ingest.read_batch_files(settings, self.warehouse, batch_id, names)
        ingest.validate_batch_files(settings, self.warehouse, batch_id)
        outcomes = self.outcomes(batch_id)
        assert sorted(outcomes) == sorted(names)
        for name, fuzzed in zip(names, files, strict=True):
            outcome = outcomes[name]
            content = inflate(fuzzed.data, fuzzed.suffix.endswith(".gz"))
            self.files += 1
            if outcome.landed["status"] == "rejected":
                self.refused += 1
                error = outcome.landed["error"]
                assert error.startswith(f"{name}: ")
                assert outcome.raw == [] and outcome.landed["rows_read"] == 0
                check_refusal(fuzzed, error[len(name) + 2 :], content)
            else:
                assert outcome.landed["status"] == "processed"
                self.rows += outcome.landed["rows_read"]
                check_processed(fuzzed, outcome, content)
        assert not list(landing.iterdir()), "every file leaves the landing folder"

    def outcomes(self, batch_id: str) -> dict[str, Outcome]:
        def rows(table: str, columns: list[str]) -> list[tuple[Any, ...]]:
            data = pq.read_table(self.warehouse.batch_file(table, batch_id), columns=columns)
            return list(zip(*(data[c].to_pylist() for c in columns), strict=True))

        out: dict[str, Outcome] = {}
        landed = pq.read_table(self.warehouse.batch_file("landed_files", batch_id)).to_pylist()
        for record in landed:
            out[record["source_file"]] = Outcome(record["source_file"], record)
        for name, number, reasons, detail in rows(
            "rejected_cdrs", ["source_file", "source_row", "reasons", "detail"]
        ):
            out[name].rejected[number] = {"reasons": reasons, "detail": detail}
        for name, number in rows("validated", ["source_file", "source_row"]):
            out[name].accepted.add(number)
        for name, number, malformed in rows("raw", ["source_file", "source_row", "malformed"]):
            out[name].raw.append(number)
            if malformed:
                out[name].malformed.add(number)
        return out


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Bench:
    root = tmp_path_factory.mktemp("fuzz")
    return Bench(root, Warehouse(root / "warehouse"))


def _fuzz(bench: Bench, files: st.SearchStrategy[Fuzzed], examples: int) -> Callable[[], None]:
    @settings(
        max_examples=examples * (10 if FULL else 1),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(files, min_size=FILES_PER_BATCH, max_size=FILES_PER_BATCH))
    def run(batch: list[Fuzzed]) -> None:
        bench.run(batch)

    return run


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("kind", ["csv", "json"])
def test_fuzzed_files_are_read_or_refused_and_every_row_is_accounted_for(
    bench: Bench, kind: str
) -> None:
    def totals() -> tuple[int, int, int, int]:  # the bench's, shared by both kinds
        return bench.files, bench.batches, bench.refused, bench.rows

    before, before_peak = totals(), _peak_mb()
    strategy = csv_files() if kind == "csv" else json_files()
    _fuzz(bench, strategy, FUZZ_EXAMPLES[kind])()
    ran, batches, refused, rows = (a - b for a, b in zip(totals(), before, strict=True))
    print(
        f"{kind}: {ran} fuzzed files in {batches} batches; {refused} refused as files, "
        f"{rows} rows read; peak memory of the process {_peak_mb():.0f} MB"
    )
    assert ran >= FUZZ_EXAMPLES[kind] * FILES_PER_BATCH * (10 if FULL else 1)
    assert _peak_mb() - before_peak < MEMORY_BUDGET_MB
