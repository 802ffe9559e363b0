"""Caller numbers are personal data: what the serving file and the exports show of them.

``CDR_CALLER_NUMBERS`` chooses, for ``cdr.duckdb`` and every export:

- ``clear`` (default): the number as stored;
- ``hash``: a keyed hash (HMAC-SHA256 of the E.164 number, first 24 hex digits), the same
  for the same number in every table and run, so counts per caller still work, and not
  reversible without the key (a dictionary attack over all numbers needs the key);
- ``mask``: the first 4 and last 2 characters, the rest as ``*`` (for people reading rows;
  different numbers can share a mask, so do not count by it).

With ``hash`` or ``mask``, long digit runs in ``rejected_cdrs.raw_record`` (the refused
line as sent) are shown as ``***`` too. The Parquet layer always keeps the clear number,
plus ``caller_hash`` in ``cdrs``: it is computed once per distinct caller when a batch is
deduplicated, whatever the mode, so switching modes needs no rebuild.

The key is ``CDR_CALLER_HASH_KEY`` if set, else a random key created once in the
warehouse's ``_state/caller_hash_key`` (mode 0600). It never reaches the serving file. Keep
it: a new key gives new hashes to every caller seen afterwards.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

import pyarrow as pa

from cdr_assets.lib.settings import CALLER_MODES
from cdr_assets.lib.warehouse import Warehouse, write_text_atomic

HASH_HEX_DIGITS = 24
KEY_ENV = "CDR_CALLER_HASH_KEY"


def check_mode(mode: str) -> str:
    if mode not in CALLER_MODES:
        raise ValueError(f"CDR_CALLER_NUMBERS={mode!r}: expected one of {', '.join(CALLER_MODES)}")
    return mode


def caller_key(warehouse: Warehouse) -> bytes:
    """The hashing key: the environment's, else the warehouse's own (created on first use)."""
    configured = os.environ.get(KEY_ENV, "").strip()
    if configured:
        return configured.encode()
    path = warehouse.state_dir / "caller_hash_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text(encoding="utf-8").strip().encode()


def caller_hashes(numbers: pa.Array, key: bytes) -> pa.Table:
    """``caller_number`` -> ``caller_hash`` for distinct numbers (one HMAC per number)."""
    values = [n for n in numbers.to_pylist() if n is not None]
    digests = [
        hmac.new(key, n.encode(), hashlib.sha256).hexdigest()[:HASH_HEX_DIGITS] for n in values
    ]
    return pa.table(
        {"caller_number": pa.array(values, pa.string()), "caller_hash": pa.array(digests)}
    )


def caller_expression(mode: str) -> str:
    """What a served or exported row shows as ``caller_number`` (SQL over a ``cdrs`` row)."""
    if check_mode(mode) == "hash":
        return "caller_hash"
    if mode == "mask":
        return (
            "CASE WHEN length(caller_number) <= 6 THEN repeat('*', length(caller_number)) "
            "ELSE left(caller_number, 4) || repeat('*', length(caller_number) - 6) "
            "|| right(caller_number, 2) END"
        )
    return "caller_number"


RAW_RECORD_MASKED = r"regexp_replace(raw_record, '\+?[0-9]{6,}', '***', 'g')"


def private_cdrs(source: str, mode: str) -> str:
    """A FROM-clause source of ``cdrs`` rows as ``mode`` shows them."""
    if check_mode(mode) == "clear":
        return source
    return f"(SELECT * REPLACE ({caller_expression(mode)} AS caller_number) FROM {source})"


SUBJECT_HASHES = "alert_subject_hashes"  # registered while publishing, never stored


def private_alerts(source: str, mode: str) -> str:
    """Alerts whose subject is a caller number show it as ``cdrs`` shows callers."""
    if check_mode(mode) == "clear":
        return source
    if mode == "hash":
        return (
            "(SELECT a.* REPLACE (CASE WHEN a.subject_type = 'caller' THEN h.caller_hash "
            f"ELSE a.subject END AS subject) FROM {source} AS a "
            f"LEFT JOIN {SUBJECT_HASHES} AS h ON a.subject_type = 'caller' "
            "AND h.caller_number = a.subject)"
        )
    masked = caller_expression(mode).replace("caller_number", "subject")
    return (
        f"(SELECT * REPLACE (CASE WHEN subject_type = 'caller' THEN {masked} ELSE subject END "
        f"AS subject) FROM {source})"
    )


def private_rejected(source: str, mode: str) -> str:
    if check_mode(mode) == "clear":
        return source
    return f"(SELECT * REPLACE ({RAW_RECORD_MASKED} AS raw_record) FROM {source})"
