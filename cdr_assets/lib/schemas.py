"""The validation rules of the CDR contract, stated once as pandera (polars) schemas.

``row_rules_schema`` holds one dataframe check per refusal reason of the contract, named by
its reason code. Validation runs it lazily over the parsed batch; pandera's failure cases
(row index, check name) *are* the split: a row with any failure is refused with exactly the
names of the checks it failed. ``validated_schema`` states what an accepted row looks like;
it backs the asset checks on ``validated_cdrs`` and ``cdrs``.

Every rule passes on a malformed row except ``malformed_record`` itself, so a row that could
not be split into fields gets that one reason and no guesses about fields it never had.
"""

from __future__ import annotations

from collections.abc import Callable

import pandera.polars as pa
import polars as pl
import pycountry

CALL_TYPES = ("local", "national", "international")
DISPOSITIONS = ("ANSWERED", "NO_ANSWER", "BUSY", "FAILED", "CONGESTION")
# Officially assigned ISO 3166-1 alpha-2 codes (user-assigned codes such as XK are not).
COUNTRY_CODES = tuple(sorted(c.alpha_2 for c in pycountry.countries))
FLAGS = (
    "duration_mismatch",
    "country_mismatch",
    "call_type_mismatch",
    "caller_unparsed",
    "called_number_unallocated",
    "self_call",
)
E164_PATTERN = r"^\+[1-9][0-9]{1,14}$"


def _col(name: str) -> pl.Expr:
    return pl.col(name)


def _present(name: str) -> pl.Expr:
    return _col(name).is_not_null()


def _absent(name: str) -> pl.Expr:
    return _col(name).is_null()


def row_rules(max_duration_seconds: int) -> dict[str, pl.Expr]:
    """Reason code -> a polars expression that is true when a parsed row obeys that rule.

    The parsed columns come from ``validation.PARSE_SQL``: ``*_raw`` are the stripped strings
    as given (null when empty), the others their parsed values (null when unparseable).
    """
    duration_given_ok = _present("duration_given") & (
        _col("duration_given") <= max_duration_seconds
    )
    derived_ok = _absent("derived_duration") | (_col("derived_duration") <= max_duration_seconds)
    return {
        "malformed_record": ~_col("malformed"),
        "missing_field:call_id": _present("call_id"),
        "missing_field:called_number": _present("called_raw"),
        "missing_field:start_time": _present("start_raw"),
        "missing_field:carrier_id": _present("carrier_id"),
        "missing_field:duration_seconds": _present("end_raw") | _present("duration_raw"),
        "invalid_number:called_number": _absent("called_raw")
        | _col("called_possible").fill_null(False),
        "invalid_timestamp:start_time": _absent("start_raw") | _present("start_ts"),
        "invalid_timestamp:end_time": _absent("end_raw") | _present("end_ts"),
        "end_before_start": _absent("start_ts")
        | _absent("end_ts")
        | (_col("end_ts") >= _col("start_ts")),
        "invalid_duration": pl.when(_present("duration_raw"))
        .then(duration_given_ok)
        .otherwise(derived_ok),
        "invalid_call_type": _absent("call_type_raw") | _col("call_type").is_in(CALL_TYPES),
        "invalid_country_code": _absent("country_code_raw")
        | _col("country_code").is_in(COUNTRY_CODES),
        "invalid_disposition": _absent("disposition_raw") | _col("disposition").is_in(DISPOSITIONS),
    }


REASONS = tuple(row_rules(0))
# The parsed columns the rules read: only these go through pandera, so a failing row's
# failure case stays small whatever the size of its raw text.
RULE_COLUMNS = (
    "malformed",
    "call_id",
    "carrier_id",
    "called_raw",
    "called_possible",
    "start_raw",
    "start_ts",
    "end_raw",
    "end_ts",
    "duration_raw",
    "duration_given",
    "derived_duration",
    "call_type_raw",
    "call_type",
    "country_code_raw",
    "country_code",
    "disposition_raw",
    "disposition",
)


# The rule columns whose rules read only whether they are given (null when not). Validation
# hands them to pandera as booleans, true where given, instead of their text: the same
# rules, without copying the text (``validation.RULES_SELECT``).
PRESENCE_COLUMNS = (
    "call_id",
    "carrier_id",
    "called_raw",
    "start_raw",
    "end_raw",
    "duration_raw",
    "call_type_raw",
    "country_code_raw",
    "disposition_raw",
)


def _row_check(reason: str, rule: pl.Expr) -> pa.Check:
    # A rule that cannot be decided (null) is broken, not passed: fill with False.
    ok = rule.fill_null(False)
    if reason != "malformed_record":
        ok = _col("malformed") | ok

    def check(data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(ok.alias(reason))

    # The check's name is the reason code: pandera reports it for each failing row.
    return pa.Check(check, name=reason)


def row_rules_schema(max_duration_seconds: int) -> pa.DataFrameSchema:
    parsed_columns: dict[str, pa.Column] = {
        "malformed": pa.Column(pl.Boolean, nullable=False),
        "called_possible": pa.Column(pl.Boolean, nullable=True),
        "duration_given": pa.Column(pl.Int64, nullable=True),
        "derived_duration": pa.Column(pl.Int64, nullable=True),
    }
    checks = [_row_check(reason, rule) for reason, rule in row_rules(max_duration_seconds).items()]
    return pa.DataFrameSchema(parsed_columns, checks=checks, name="cdr_row_rules")


def _isin(values: tuple[str, ...]) -> Callable[[pa.PolarsData], pl.LazyFrame]:
    def check(data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col(data.key).is_in(values))

    return check


def with_utc_instants(frame: pl.DataFrame) -> pl.DataFrame:
    """Instants as UTC, whatever zone the reading session labelled them with."""
    return frame.with_columns(pl.col(pl.Datetime).dt.convert_time_zone("UTC"))


def validated_schema(max_duration_seconds: int) -> pa.DataFrameSchema:
    """What every accepted, typed row looks like (backs the asset checks)."""
    utc = pl.Datetime("us", "UTC")
    return pa.DataFrameSchema(
        {
            "call_id": pa.Column(pl.String, nullable=False),
            "caller_number": pa.Column(pl.String, nullable=True),
            "called_number": pa.Column(
                pl.String, pa.Check.str_matches(E164_PATTERN), nullable=False
            ),
            "start_time": pa.Column(utc, nullable=False),
            "end_time": pa.Column(utc, nullable=False),
            "duration_seconds": pa.Column(
                pl.Int64, pa.Check.in_range(0, max_duration_seconds), nullable=False
            ),
            "carrier_id": pa.Column(pl.String, nullable=False),
            "call_type": pa.Column(
                pl.String, pa.Check(_isin(CALL_TYPES), name="call_type_known"), nullable=True
            ),
            "country_code": pa.Column(
                pl.String,
                pa.Check(_isin(COUNTRY_CODES), name="iso_3166_alpha_2"),
                nullable=True,
            ),
            "disposition": pa.Column(
                pl.String, pa.Check(_isin(DISPOSITIONS), name="disposition_known"), nullable=False
            ),
            "call_date": pa.Column(pl.Date, nullable=False),
            "source_file": pa.Column(pl.String, nullable=False),
            "source_row": pa.Column(pl.Int64, pa.Check.ge(1), nullable=False),
        },
        checks=[
            pa.Check(
                lambda data: data.lazyframe.select(pl.col("end_time") >= pl.col("start_time")),
                name="end_not_before_start",
            ),
            pa.Check(
                lambda data: data.lazyframe.select(
                    pl.col("call_date") == pl.col("start_time").dt.date()
                ),
                name="call_date_is_utc_date_of_start",
            ),
        ],
        name="validated_cdr",
        strict=False,
    )
