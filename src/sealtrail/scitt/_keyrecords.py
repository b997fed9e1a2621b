"""The service's receipt keys, as log entries: a rotation is on the record.

A key record (content type :data:`KEYS_RECORD_TYPE`) names the receipt key in use and the
retired ones that old receipts still verify with, each by its COSE key thumbprint (the
``kid`` of ``/.well-known/scitt-keys``). The service signs it with the key it names as
current and registers it when it starts with a key set other than the last one recorded —
that is, after ``sealtrail keys rotate``. A log's first key set is not recorded: it is the
one its first receipts name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from sealtrail.errors import InvalidInput

__all__ = [
    "KEYS_RECORD_TYPE",
    "MAX_RETIRED_KEYS",
    "ServiceKeys",
    "keys_record",
    "parse_keys_record",
]

KEYS_RECORD_TYPE = "application/vnd.sealtrail.service-keys+json"
#: Most retired keys a record lists.
MAX_RETIRED_KEYS = 256
_FIELDS = frozenset({"current", "algorithm", "retired"})
_KID = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ServiceKeys:
    """The receipt key in use (its kid and algorithm) and the retired ones' kids (sorted)."""

    current: bytes
    algorithm: str
    retired: tuple[bytes, ...] = field(default=())


def _invalid(message: str) -> InvalidInput:
    return InvalidInput(f"service keys record: {message}", code="keys-record-invalid")


def parse_keys_record(payload: bytes) -> ServiceKeys:
    """Read a key record (JSON); ``keys-record-invalid`` naming what is wrong."""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise _invalid("not JSON") from None
    if not isinstance(doc, dict) or not set(doc) <= _FIELDS:
        raise _invalid("an object with current, algorithm and retired")
    current, algorithm, retired = doc.get("current"), doc.get("algorithm"), doc.get("retired", [])
    if not isinstance(current, str) or not _KID.fullmatch(current):
        raise _invalid("current is a key id: 64 lowercase hex digits")
    if not isinstance(algorithm, str) or not 0 < len(algorithm) <= 32:
        raise _invalid("algorithm is the current key's algorithm name")
    if not isinstance(retired, list) or len(retired) > MAX_RETIRED_KEYS:
        raise _invalid(f"retired is a list of at most {MAX_RETIRED_KEYS} key ids")
    if not all(isinstance(k, str) and _KID.fullmatch(k) for k in retired):
        raise _invalid("a retired key id is 64 lowercase hex digits")
    if retired != sorted(set(retired)) or current in retired:
        raise _invalid("retired key ids are sorted, each once, and not the current one")
    return ServiceKeys(bytes.fromhex(current), algorithm, tuple(bytes.fromhex(k) for k in retired))


def keys_record(keys: ServiceKeys) -> bytes:
    """The record of ``keys``, as :func:`parse_keys_record` reads it (canonical JSON)."""
    doc = {
        "current": keys.current.hex(),
        "algorithm": keys.algorithm,
        "retired": sorted(k.hex() for k in keys.retired),
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
