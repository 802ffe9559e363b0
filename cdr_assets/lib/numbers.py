"""Number facts: what phonenumbers says about each distinct number string, decided once ever.

Validation (is the called number possible?), call-type derivation and enrichment all read
the same facts, joined in SQL by the number as written in the file (stripped) or by its
E.164 form. Facts are cached in the warehouse per phonenumbers version, facts layout and
default region, so a number string is decided once, whatever the number of rows, batches
or runs that carry it, and looked up in SQL (a semi-join of the batch's distinct numbers
against the cache files).

New numbers go first to the vectorised engine of :mod:`cdr_assets.lib.number_tables`
(phonenumbers' metadata and prefix tables evaluated over whole arrays, with facts equal to
:func:`number_fact`'s); the few it leaves undecided are parsed one by one by
:func:`number_fact`, on every core when there are many.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import duckdb
import phonenumbers
import phonenumbers.carrier
import phonenumbers.geocoder
import phonenumbers.timezone
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from phonenumbers import PhoneNumberType

from cdr_assets.lib.number_tables import FactsEngine

NUMBER_FACTS_SCHEMA = pa.schema(
    [
        ("number", pa.string()),
        ("e164", pa.string()),
        ("possible", pa.bool_()),
        ("valid", pa.bool_()),
        ("region", pa.string()),
        ("country_calling_code", pa.int32()),
        ("number_type", pa.string()),
        ("geographic", pa.bool_()),
        ("area_code", pa.string()),
        ("description", pa.string()),
        ("carrier_name", pa.string()),
        ("timezones", pa.list_(pa.string())),
    ]
)
# Bumped whenever the columns above change, so an old cache is never read as a new one.
FACTS_LAYOUT = 2
PARALLEL_THRESHOLD = 20_000
# New numbers decided in this process so far: by the vectorised engine, one by one.
FRESH_COUNTS: Counter[str] = Counter()

_TYPE_NAMES = {
    value: name.lower()
    for name, value in vars(PhoneNumberType).items()
    if name.isupper() and isinstance(value, int)
}


def _parse(number: str, default_region: str | None) -> phonenumbers.PhoneNumber | None:
    # '00' is the international prefix the contract accepts from every source, whatever the
    # default region's own international prefix is.
    text = "+" + number[2:] if number.startswith("00") else number
    if not text.startswith("+") and default_region is None:
        return None
    try:
        return phonenumbers.parse(text, None if text.startswith("+") else default_region)
    except phonenumbers.NumberParseException:
        return None


def number_fact(number: str, default_region: str | None) -> dict[str, object]:
    """The facts of one number string (the only place phonenumbers is called per number)."""
    parsed = _parse(number, default_region)
    if parsed is None:
        return {"number": number, "possible": False, "valid": False}
    possible = phonenumbers.is_possible_number(parsed)
    valid = possible and phonenumbers.is_valid_number(parsed)
    region = phonenumbers.region_code_for_number(parsed)
    area_code = None
    geographic = False
    description = carrier_name = None
    timezones: list[str] = []
    if possible:
        zones = phonenumbers.timezone.time_zones_for_number(parsed)
        timezones = [z for z in zones if z != "Etc/Unknown"]
    if valid:
        description = phonenumbers.geocoder.description_for_number(parsed, "en") or None
        carrier_name = phonenumbers.carrier.name_for_number(parsed, "en") or None
        geographic = phonenumbers.is_number_geographical(parsed)
        area_length = phonenumbers.length_of_geographical_area_code(parsed)
        if area_length > 0:
            area_code = phonenumbers.national_significant_number(parsed)[:area_length]
    return {
        "number": number,
        "e164": (
            phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
            if possible
            else None
        ),
        "possible": possible,
        "valid": valid,
        "region": region if region not in (None, "ZZ") else None,
        "country_calling_code": parsed.country_code,
        "number_type": _TYPE_NAMES.get(phonenumbers.number_type(parsed)) if valid else None,
        "geographic": geographic,
        "area_code": area_code,
        "description": description,
        "carrier_name": carrier_name,
        "timezones": timezones,
    }


def _facts_rows(args: tuple[list[str], str | None]) -> list[dict[str, object]]:
    numbers, default_region = args
    return [number_fact(n, default_region) for n in numbers]


def compute_number_facts(numbers: Iterable[str], default_region: str | None) -> pa.Table:
    """Facts of each number; a large set is split over every core (phonenumbers is pure
    Python, tens of microseconds a number)."""
    numbers = list(numbers)
    workers = os.cpu_count() or 1
    if len(numbers) < PARALLEL_THRESHOLD or workers == 1:
        rows = _facts_rows((numbers, default_region))
    else:
        size = -(-len(numbers) // (workers * 4))
        chunks = [(numbers[i : i + size], default_region) for i in range(0, len(numbers), size)]
        with ProcessPoolExecutor(max_workers=workers) as pool:
            rows = [row for part in pool.map(_facts_rows, chunks) for row in part]
    return pa.Table.from_pylist(rows, schema=NUMBER_FACTS_SCHEMA)


def fresh_number_facts(
    numbers: pa.Array | pa.ChunkedArray, default_region: str | None, tables_dir: Path | None
) -> pa.Table:
    """Facts of distinct, non-null number strings no cache knows: the vectorised engine
    first (its prefix tables kept in ``tables_dir``), :func:`number_fact` for the rest."""
    decided, undecided = FactsEngine(tables_dir).facts(numbers, default_region)
    return _with_the_rest(decided, undecided, default_region)


def _with_the_rest(decided: pa.Table, undecided: pa.Array, default_region: str | None) -> pa.Table:
    """The engine's facts and those of the numbers it left, decided one by one."""
    FRESH_COUNTS["engine"] += decided.num_rows
    FRESH_COUNTS["per_number"] += len(undecided)
    if len(undecided) == 0:
        return decided
    return pa.concat_tables([decided, compute_number_facts(undecided.to_pylist(), default_region)])


class NumberFactsCache:
    """Parquet cache of number facts, one folder per phonenumbers version, facts layout and
    default region.

    A new phonenumbers release can change what a number is, so its facts live in a new
    folder and are decided again; old folders are never read. The engine's prefix tables
    are kept beside them, under ``prefix_tables/``, also per phonenumbers version.
    """

    def __init__(self, root: Path, default_region: str | None) -> None:
        self.root = root
        version = phonenumbers.__version__
        self.folder = (
            root / f"phonenumbers={version}" / f"default_region={default_region or 'none'}"
        )
        if FACTS_LAYOUT != 2:  # the layout of the first releases has no folder of its own
            self.folder = self.folder / f"layout={FACTS_LAYOUT}"
        self.tables_dir = root / "prefix_tables"
        self.default_region = default_region

    def files(self) -> list[Path]:
        return sorted(self.folder.glob("*.parquet")) if self.folder.exists() else []

    def facts_for(
        self, numbers: pa.Array | pa.ChunkedArray, columns: Sequence[str] | None = None
    ) -> pa.Table:
        """Facts of every distinct non-null string in ``numbers``, deciding only the misses.

        ``columns``: the fact columns wanted (``number`` is always there); fewer columns make
        the cache read faster and the table smaller. Misses are decided whole and cached.
        """
        wanted_columns = _wanted(columns)
        known, missing = self._known_and_missing(numbers, wanted_columns)
        if len(missing) == 0:
            return known
        fresh = fresh_number_facts(missing, self.default_region, self.tables_dir)
        self._append(fresh)
        return pa.concat_tables([known, fresh.select(wanted_columns)])

    def facts_for_slices(
        self, numbers: pa.Array | pa.ChunkedArray, size: int, columns: Sequence[str]
    ) -> pa.Table:
        """:meth:`facts_for` of ``numbers``' distinct strings, ``size`` at a time, the
        slices side by side.

        One thread a core looks a slice up in the cache and runs the vectorised engine on
        its misses: DuckDB and the engine's pyarrow kernels release the GIL. The numbers the
        engine leaves are decided afterwards, all together, in this thread (phonenumbers is
        pure Python; :func:`compute_number_facts` forks for a large set, never beside our
        own threads), and the new facts are cached as one part.
        """
        wanted_columns = _wanted(columns)
        numbers = pc.drop_null(pc.unique(numbers))  # no number in two slices
        starts = range(0, len(numbers), size)
        if len(starts) <= 1:
            return self.facts_for(numbers, columns)
        engine: list[FactsEngine] = []
        engine_lock = threading.Lock()

        def one_slice(start: int) -> tuple[pa.Table, pa.Table, pa.Array]:
            known, missing = self._known_and_missing(numbers.slice(start, size), wanted_columns)
            if len(missing) == 0:
                return known, NUMBER_FACTS_SCHEMA.empty_table(), pa.array([], pa.string())
            with engine_lock:  # built (its prefix tables loaded) once, when a miss needs it
                if not engine:
                    engine.append(FactsEngine(self.tables_dir))
            decided, undecided = engine[0].facts(missing, self.default_region)
            return known, decided, undecided

        with ThreadPoolExecutor(max_workers=min(len(starts), os.cpu_count() or 1)) as pool:
            parts = list(pool.map(one_slice, starts))
        known = pa.concat_tables([part[0] for part in parts])
        decided = pa.concat_tables([part[1] for part in parts])
        undecided = pa.concat_arrays([part[2].cast(pa.string()) for part in parts])
        if decided.num_rows + len(undecided) == 0:
            return known
        fresh = _with_the_rest(decided, undecided, self.default_region)
        self._append(fresh)
        return pa.concat_tables([known, fresh.select(wanted_columns)])

    def _known_and_missing(
        self, numbers: pa.Array | pa.ChunkedArray, columns: list[str]
    ) -> tuple[pa.Table, pa.Array]:
        """(the cached facts of ``numbers``' distinct non-null strings, the strings the cache
        does not know)."""
        with duckdb.connect() as con:
            con.register("batch_numbers", pa.table({"n": _as_chunked(numbers)}))
            con.execute(
                "CREATE TEMP TABLE wanted AS "
                "SELECT DISTINCT n FROM batch_numbers WHERE n IS NOT NULL"
            )
            known = self._lookup(con, "number", columns)
            con.register("known", known)
            missing = con.sql("SELECT n FROM wanted ANTI JOIN known ON known.number = wanted.n")
            return known, missing.to_arrow_table()["n"].combine_chunks()

    def source_sql(self) -> str | None:
        """A DuckDB FROM-clause source reading every cached fact, or None when none is."""
        files = self.files()
        if not files:
            return None
        listed = "[" + ", ".join("'" + str(f).replace("'", "''") + "'" for f in files) + "]"
        return f"read_parquet({listed})"

    def _lookup(
        self, con: duckdb.DuckDBPyConnection, column: str, columns: Sequence[str] | None = None
    ) -> pa.Table:
        """Cached facts whose ``column`` is in the temp table ``wanted``: a semi-join in
        DuckDB, which reads the cache files without loading them whole."""
        schema = NUMBER_FACTS_SCHEMA
        if columns is not None:
            schema = pa.schema([NUMBER_FACTS_SCHEMA.field(name) for name in columns])
        source = self.source_sql()
        if source is None:
            return schema.empty_table()
        selected = ", ".join(f"f.{name}" for name in schema.names)
        table = con.sql(
            f"SELECT {selected} FROM {source} AS f SEMI JOIN wanted ON f.{column} = wanted.n"
        ).to_arrow_table()
        return table.cast(schema)

    def _append(self, fresh: pa.Table) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"part-{len(self.files()):06d}-{os.getpid()}.parquet"
        tmp = self.folder / f".{name}.tmp"
        pq.write_table(fresh, tmp)
        os.replace(tmp, self.folder / name)


def _wanted(columns: Sequence[str] | None) -> list[str]:
    return ["number", *(c for c in (columns or NUMBER_FACTS_SCHEMA.names) if c != "number")]


def _as_chunked(values: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    if isinstance(values, pa.ChunkedArray):
        return values.cast(pa.string())
    return pa.chunked_array([values], type=values.type).cast(pa.string())
