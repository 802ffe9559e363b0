"""Fraud rule thresholds and the alert outlet, read from ``fraud.toml``.

The file sits at the project root; ``CDR_FRAUD_CONFIG`` names another one (a relative value
is taken from the working directory, as the other ``CDR_*`` folders are). A missing file
means the documented defaults, which are the values below and those of the shipped
``fraud.toml``. Every key is checked when the file is read: an unknown section or key, or a
value of the wrong type or range, raises :class:`FraudConfigError` with the file, the rule
(section) and the key, so a typo never silently falls back to a default.

Money thresholds are ``Decimal`` (write them as TOML strings, ``"20.00"``, or integers), so
that spend is compared with spend without a binary float in between.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from cdr_assets.lib.settings import project_root

CONFIG_ENV = "CDR_FRAUD_CONFIG"
CONFIG_FILE = "fraud.toml"

SEVERITIES = ("WARN", "ERROR")
OUTLET_KINDS = ("none", "ndjson", "http")
TRAFFIC_SUBJECTS = ("carrier", "destination")
TRAFFIC_METRICS = ("calls", "minutes", "asr")

# Illustrative: satellite and international networks (+870, +881, +882, +883), the
# international premium rate service (+979), and country codes that recur in published
# IRSF hot lists. Replace them with your own fraud feed.
DEFAULT_HIGH_RISK_PREFIXES = (
    "+53",
    "+224",
    "+232",
    "+239",
    "+240",
    "+252",
    "+674",
    "+675",
    "+682",
    "+688",
    "+870",
    "+881",
    "+882",
    "+883",
    "+979",
)


class FraudConfigError(ValueError):
    """``fraud.toml`` has a value the rules cannot work with."""


MAX_SAMPLE_CALL_IDS = 1000  # the most call_ids an alert may keep ([alerts] sample_call_ids)


@dataclass(frozen=True)
class Wangiri:
    """One caller, many very short or unanswered calls to many numbers, in a short window."""

    enabled: bool = True
    window_minutes: int = 60
    max_short_seconds: int = 5
    min_short_calls: int = 30
    min_distinct_called: int = 25
    min_short_share: float = 0.8
    error_distinct_called: int = 100
    snooze_hours: float = 24.0


@dataclass(frozen=True)
class Irsf:
    """One caller's calls to high-risk prefixes or premium-rate numbers, over a threshold."""

    enabled: bool = True
    window_minutes: int = 60
    high_risk_prefixes: tuple[str, ...] = DEFAULT_HIGH_RISK_PREFIXES
    premium_rate: bool = True
    min_calls: int = 5
    min_minutes: float = 60.0
    min_spend: Decimal = Decimal("25.00")
    error_minutes: float = 240.0
    error_spend: Decimal = Decimal("100.00")
    snooze_hours: float = 24.0


@dataclass(frozen=True)
class SpendVelocity:
    """A caller's international spend in an hour far above its own trailing hours."""

    enabled: bool = True
    baseline_days: int = 7
    min_baseline_hours: int = 8
    baseline_quantile: float = 0.9
    ratio: float = 5.0
    min_calls: int = 5
    min_spend: Decimal = Decimal("20.00")
    error_spend: Decimal = Decimal("100.00")
    off_hours_weight: float = 2.0
    business_start_hour: int = 8
    business_end_hour: int = 18
    business_days: tuple[int, ...] = (1, 2, 3, 4, 5)
    snooze_hours: float = 24.0


@dataclass(frozen=True)
class TrafficAnomaly:
    """Calls, minutes or ASR of a carrier or destination hour far from the same hour's past."""

    enabled: bool = True
    subjects: tuple[str, ...] = TRAFFIC_SUBJECTS
    metrics: tuple[str, ...] = TRAFFIC_METRICS
    baseline_days: int = 7
    min_baseline_days: int = 5
    min_hour_calls: int = 30
    z_warn: float = 6.0
    z_error: float = 12.0
    min_relative_change: float = 0.5
    min_asr_change: float = 15.0
    collapse_ratio: float = 0.2
    snooze_hours: float = 6.0


@dataclass(frozen=True)
class LongCall:
    enabled: bool = True
    max_seconds: int = 4 * 3600
    error_seconds: int = 12 * 3600
    snooze_hours: float = 24.0


@dataclass(frozen=True)
class SelfCall:
    enabled: bool = True
    error_calls: int = 10
    snooze_hours: float = 24.0


@dataclass(frozen=True)
class NegativeMargin:
    enabled: bool = True
    error_loss: Decimal = Decimal("10.00")
    snooze_hours: float = 24.0


@dataclass(frozen=True)
class Alerts:
    sample_call_ids: int = 20


@dataclass(frozen=True)
class Outlet:
    """Where the outlet sensor hands new alerts: nowhere, an NDJSON file or an HTTP POST."""

    kind: str = "ndjson"
    path: str = ""  # empty: <warehouse>/outlet/fraud_alerts.ndjson
    url: str = ""
    timeout_seconds: float = 10.0
    batch_size: int = 100
    min_severity: str = "WARN"
    since_days: int = 7


@dataclass(frozen=True)
class FraudConfig:
    alerts: Alerts = field(default_factory=Alerts)
    wangiri: Wangiri = field(default_factory=Wangiri)
    irsf: Irsf = field(default_factory=Irsf)
    spend_velocity: SpendVelocity = field(default_factory=SpendVelocity)
    traffic_anomaly: TrafficAnomaly = field(default_factory=TrafficAnomaly)
    long_call: LongCall = field(default_factory=LongCall)
    self_call: SelfCall = field(default_factory=SelfCall)
    negative_margin: NegativeMargin = field(default_factory=NegativeMargin)
    outlet: Outlet = field(default_factory=Outlet)
    source: str = "defaults"  # the file read, for messages and metadata

    def snooze_hours(self, rule: str) -> float:
        return float(getattr(self, rule).snooze_hours)

    def enabled(self, rule: str) -> bool:
        return bool(getattr(self, rule).enabled)

    def version(self) -> str:
        """12 hex digits of the effective thresholds (not the file's path or comments)."""
        data = {k: v for k, v in asdict(self).items() if k not in ("source", "outlet")}
        text = json.dumps(data, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


RULE_SECTIONS = (
    "wangiri",
    "irsf",
    "spend_velocity",
    "traffic_anomaly",
    "long_call",
    "self_call",
    "negative_margin",
)
_SECTIONS: dict[str, type] = {
    "alerts": Alerts,
    **{name: type(getattr(FraudConfig(), name)) for name in RULE_SECTIONS},
    "outlet": Outlet,
}


def config_path(env: Mapping[str, str] | None = None) -> Path:
    """``$CDR_FRAUD_CONFIG`` (from the working directory), else ``fraud.toml`` at the root."""
    env = os.environ if env is None else env
    value = (env.get(CONFIG_ENV) or "").strip()
    if value:
        return Path(value).expanduser().resolve()
    return (project_root() / CONFIG_FILE).resolve()


def load_config(path: Path | None = None) -> FraudConfig:
    """The thresholds of ``path`` (default :func:`config_path`); defaults when it is absent."""
    path = config_path() if path is None else path
    if not path.exists():
        return FraudConfig(source=f"{path} (absent: defaults)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise FraudConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_config(data, str(path))


def parse_config(data: Mapping[str, Any], source: str = "fraud.toml") -> FraudConfig:
    """A :class:`FraudConfig` from parsed TOML; every value checked, defaults for the rest."""
    config = FraudConfig(source=source)
    for section, values in data.items():
        if section not in _SECTIONS:
            raise FraudConfigError(
                f"{source}: unknown section [{section}]; expected one of {', '.join(_SECTIONS)}"
            )
        if not isinstance(values, dict):
            raise FraudConfigError(f"{source}: [{section}] must be a table of keys")
        current = getattr(config, section)
        known = {f.name for f in fields(current)}
        changes = {}
        for key, value in values.items():
            if key not in known:
                raise FraudConfigError(
                    f"{source}: [{section}] {key}: unknown key; expected one of "
                    f"{', '.join(sorted(known))}"
                )
            check = _CHECKS.get((section, key)) or _CHECKS[("*", key)]
            try:
                changes[key] = check(value)
            except (TypeError, ValueError) as exc:
                raise FraudConfigError(
                    f"{source}: [{section}] {key}: {exc}, got {value!r}"
                ) from None
        updated = replace(current, **changes)
        _check_section(source, section, updated)
        config = replace(config, **{section: updated})
    return config


# -- value checks ------------------------------------------------------------------------


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("must be true or false")
    return value


def _int(low: int, high: int | None = None) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError("must be a whole number")
        if value < low or (high is not None and value > high):
            raise ValueError(f"must be within [{low}, {high}]" if high else f"must be >= {low}")
        return value

    return check


def _float(
    low: float, high: float | None = None, *, open_low: bool = False
) -> Callable[..., float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError("must be a number")
        number = float(value)
        too_low = number <= low if open_low else number < low
        if not math.isfinite(number) or too_low or (high is not None and number > high):
            bound = f"> {low}" if open_low else f">= {low}"
            raise ValueError(f"must be {bound}" + (f" and <= {high}" if high is not None else ""))
        return number

    return check


def _money(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TypeError('must be an amount as a string ("20.00") or a whole number')
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError("must be a decimal amount") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError("must be a decimal amount >= 0")
    return amount


_PREFIX_RE = re.compile(r"\+?\d{1,15}")


def _prefixes(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError('must be a list of E.164 prefixes such as ["+881", "+53"]')
    out = []
    for text in value:
        if not _PREFIX_RE.fullmatch(text.strip()):
            raise ValueError(f"{text!r} is not a prefix of digits (optionally with a leading +)")
        out.append("+" + text.strip().removeprefix("+"))
    return tuple(dict.fromkeys(out))


def _choices(allowed: tuple[str, ...]) -> Callable[[Any], tuple[str, ...]]:
    def check(value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise TypeError(f"must be a list drawn from {list(allowed)}")
        bad = [v for v in value if v not in allowed]
        if bad or not value:
            raise ValueError(f"must be a non-empty list drawn from {list(allowed)}")
        return tuple(dict.fromkeys(value))

    return check


def _choice(allowed: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in allowed:
            raise ValueError(f"must be one of {list(allowed)}")
        return str(value)

    return check


def _days_of_week(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 7 for v in value
    ):
        raise ValueError("must be a list of ISO weekdays, 1 (Monday) to 7 (Sunday)")
    return tuple(sorted(set(value)))


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("must be a string")
    return value.strip()


_CHECKS: dict[tuple[str, str], Callable[[Any], Any]] = {
    ("*", "enabled"): _bool,
    ("*", "snooze_hours"): _float(0.0, 24.0 * 366),
    ("*", "window_minutes"): _int(1, 24 * 60),
    ("*", "min_calls"): _int(1),
    ("*", "min_spend"): _money,
    ("*", "error_spend"): _money,
    ("alerts", "sample_call_ids"): _int(0, MAX_SAMPLE_CALL_IDS),
    ("wangiri", "max_short_seconds"): _int(0, 3600),
    ("wangiri", "min_short_calls"): _int(1),
    ("wangiri", "min_distinct_called"): _int(1),
    ("wangiri", "min_short_share"): _float(0.0, 1.0),
    ("wangiri", "error_distinct_called"): _int(1),
    ("irsf", "high_risk_prefixes"): _prefixes,
    ("irsf", "premium_rate"): _bool,
    ("irsf", "min_minutes"): _float(0.0),
    ("irsf", "error_minutes"): _float(0.0),
    ("spend_velocity", "baseline_days"): _int(1, 60),
    ("spend_velocity", "min_baseline_hours"): _int(1),
    ("spend_velocity", "baseline_quantile"): _float(0.0, 1.0),
    ("spend_velocity", "ratio"): _float(0.0, open_low=True),
    ("spend_velocity", "off_hours_weight"): _float(1.0, 100.0),
    ("spend_velocity", "business_start_hour"): _int(0, 24),
    ("spend_velocity", "business_end_hour"): _int(0, 24),
    ("spend_velocity", "business_days"): _days_of_week,
    ("traffic_anomaly", "subjects"): _choices(TRAFFIC_SUBJECTS),
    ("traffic_anomaly", "metrics"): _choices(TRAFFIC_METRICS),
    ("traffic_anomaly", "baseline_days"): _int(1, 60),
    ("traffic_anomaly", "min_baseline_days"): _int(1, 60),
    ("traffic_anomaly", "min_hour_calls"): _int(1),
    ("traffic_anomaly", "z_warn"): _float(0.0, open_low=True),
    ("traffic_anomaly", "z_error"): _float(0.0, open_low=True),
    ("traffic_anomaly", "min_relative_change"): _float(0.0),
    ("traffic_anomaly", "min_asr_change"): _float(0.0, 100.0),
    ("traffic_anomaly", "collapse_ratio"): _float(0.0, 1.0),
    ("long_call", "max_seconds"): _int(1),
    ("long_call", "error_seconds"): _int(1),
    ("self_call", "error_calls"): _int(1),
    ("negative_margin", "error_loss"): _money,
    ("outlet", "kind"): _choice(OUTLET_KINDS),
    ("outlet", "path"): _text,
    ("outlet", "url"): _text,
    ("outlet", "timeout_seconds"): _float(0.0, 600.0, open_low=True),
    ("outlet", "batch_size"): _int(1, 10_000),
    ("outlet", "min_severity"): _choice(SEVERITIES),
    ("outlet", "since_days"): _int(1, 366),
}


def _check_section(source: str, section: str, values: Any) -> None:
    """Rules between keys of one section."""

    def fail(key: str, message: str) -> None:
        raise FraudConfigError(f"{source}: [{section}] {key}: {message}")

    if isinstance(values, Wangiri) and values.error_distinct_called < values.min_distinct_called:
        fail("error_distinct_called", "must be >= min_distinct_called")
    if isinstance(values, Irsf):
        if values.error_spend < values.min_spend:
            fail("error_spend", "must be >= min_spend")
        if values.error_minutes < values.min_minutes:
            fail("error_minutes", "must be >= min_minutes")
    if isinstance(values, SpendVelocity):
        if values.error_spend < values.min_spend:
            fail("error_spend", "must be >= min_spend")
        if values.business_end_hour <= values.business_start_hour:
            fail("business_end_hour", "must be after business_start_hour")
    if isinstance(values, TrafficAnomaly):
        if values.z_error < values.z_warn:
            fail("z_error", "must be >= z_warn")
        if values.min_baseline_days > values.baseline_days:
            fail("min_baseline_days", "must be <= baseline_days")
    if isinstance(values, LongCall) and values.error_seconds < values.max_seconds:
        fail("error_seconds", "must be >= max_seconds")
    if (
        isinstance(values, Outlet)
        and values.kind == "http"
        and not re.match(r"https?://", values.url)
    ):
        fail("url", f"must be an http:// or https:// URL when kind = 'http', got {values.url!r}")


def outlet_path(config: FraudConfig, warehouse_root: Path) -> Path:
    """The NDJSON outlet file: ``path`` (relative to the project root), else the warehouse's."""
    if not config.outlet.path:
        return warehouse_root / "outlet" / "fraud_alerts.ndjson"
    path = Path(config.outlet.path).expanduser()
    return (path if path.is_absolute() else project_root() / path).resolve()


__all__ = [
    "CONFIG_ENV",
    "DEFAULT_HIGH_RISK_PREFIXES",
    "RULE_SECTIONS",
    "SEVERITIES",
    "FraudConfig",
    "FraudConfigError",
    "config_path",
    "load_config",
    "outlet_path",
    "parse_config",
]
