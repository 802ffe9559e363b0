"""Where the pipeline reads and writes, and the knobs of the contract, from the environment.

Every setting has a default that works from a fresh clone: relative defaults are resolved
against the project root (the folder holding ``pyproject.toml`` above this package), so the
UI, the daemon's runs and ``cdr-pipeline process`` all find the same folders whatever their
working directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers

DEFAULT_MAX_DURATION_SECONDS = 86_400
DEFAULT_MAX_FILE_BYTES = 4 * 2**30
CALLER_MODES = ("clear", "hash", "mask")  # what serving and exports show of caller numbers


def project_root() -> Path:
    """The checkout this package runs from, else the working directory (installed package)."""
    here = Path(__file__).resolve().parent.parent.parent
    return here if (here / "pyproject.toml").exists() else Path.cwd()


def _resolve(value: str | None, default: str) -> Path:
    if value:
        return Path(value).expanduser().resolve()
    return (project_root() / default).resolve()


class SettingsError(ValueError):
    """A setting has a value the pipeline cannot work with."""


@dataclass(frozen=True)
class Settings:
    landing_dir: Path
    rates_dir: Path
    warehouse_dir: Path
    default_region: str | None = None
    source_timezone: str = "UTC"
    max_duration_seconds: int = DEFAULT_MAX_DURATION_SECONDS
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    caller_numbers: str = "clear"  # clear | hash | mask: see cdr_assets.lib.privacy

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.source_timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise SettingsError(
                f"CDR_SOURCE_TIMEZONE={self.source_timezone!r} is not an IANA time zone"
            ) from exc
        if self.caller_numbers not in CALLER_MODES:
            raise SettingsError(
                f"CDR_CALLER_NUMBERS={self.caller_numbers!r} is not one of "
                + ", ".join(CALLER_MODES)
            )
        if self.default_region is not None and (
            self.default_region not in phonenumbers.SUPPORTED_REGIONS
        ):
            raise SettingsError(
                f"CDR_DEFAULT_REGION={self.default_region!r} is not a region phonenumbers knows"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        region = (env.get("CDR_DEFAULT_REGION") or "").strip().upper() or None
        return cls(
            landing_dir=_resolve(env.get("CDR_LANDING_DIR"), "landing"),
            rates_dir=_resolve(env.get("CDR_RATES_DIR"), "rates"),
            warehouse_dir=_resolve(env.get("CDR_WAREHOUSE_DIR"), "warehouse"),
            default_region=region,
            source_timezone=(env.get("CDR_SOURCE_TIMEZONE") or "UTC").strip(),
            max_duration_seconds=int(
                env.get("CDR_MAX_DURATION_SECONDS") or DEFAULT_MAX_DURATION_SECONDS
            ),
            max_file_bytes=int(env.get("CDR_MAX_FILE_BYTES") or DEFAULT_MAX_FILE_BYTES),
            caller_numbers=(env.get("CDR_CALLER_NUMBERS") or "clear").strip().lower(),
        )
