"""Organizations, their trust anchors and registration policies — as log entries.

An organization record is a JSON document (schema in docs/scitt.md) that the service
signs with its own key and registers like any other statement, content type
:data:`ORG_RECORD_TYPE`. The registry the service enforces is the fold of those records
in registration order, so every change of anchors or policy is in the log, with a receipt,
and the registry can be rebuilt from the stored statements at any time. A record's
``version`` must be exactly one more than the organization's current one: a change cannot
be replayed, skipped or applied twice.
"""

from __future__ import annotations

import base64
import fnmatch
import functools
import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from sealtrail.errors import InvalidInput, VerificationError
from sealtrail.keys import ALGORITHMS, ED25519, ES256, ES384, Verifier, verifier_from_bytes

from ._chain import load_certificates
from ._cosekey import key_id
from ._statement import MAX_STATEMENT_SIZE_LIMIT

__all__ = [
    "ORG_RECORD_TYPE",
    "Organization",
    "Policy",
    "Registry",
    "load_json",
    "parse_org_record",
]

ORG_RECORD_TYPE = "application/vnd.sealtrail.organization+json"
#: The fields of an organization record and of its policy (anything else is refused).
RECORD_FIELDS = frozenset(
    {
        "org",
        "version",
        "roles",
        "issuers",
        "anchors",
        "device_anchors",
        "keys",
        "retired_keys",
        "revoked_certificates",
        "policy",
    }
)
POLICY_FIELDS = frozenset({"content_types", "subjects", "algorithms", "max_size"})
#: Longest string in an organization record (an issuer, a pattern, a key id), and longest
#: PEM certificate (an anchor: RSA-4096 is ~2 KiB, ML-DSA-87 ~10 KiB).
MAX_STRING = 1024
MAX_PEM = 32 * 1024
#: Most anchors, keys and policy patterns per organization.
MAX_LIST = 64
DEFAULT_ALGORITHMS = (ES256, ES384, ED25519)


@dataclass(frozen=True)
class Policy:
    """What an organization may register (all checks apply; an empty list of content types
    or subjects allows nothing; ``algorithms`` is never empty: left out, the defaults)."""

    content_types: tuple[str, ...]
    subjects: tuple[str, ...]  # shell-style patterns ("urn:acme:*")
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    max_size: int = 64 * 1024

    @functools.cached_property
    def _subject_allowed(self) -> Callable[[str], re.Match[str] | None]:
        """The subject patterns as one compiled expression (``fnmatchcase`` semantics)."""
        if not self.subjects:
            return lambda _: None
        return re.compile("|".join(fnmatch.translate(p) for p in self.subjects)).match

    def check(self, *, content_type: str, subject: str, alg: str, size: int) -> None:
        if size > self.max_size:
            raise _policy("policy-too-large", f"statement of {size} bytes exceeds {self.max_size}")
        if alg not in self.algorithms:
            raise _policy("policy-algorithm", f"algorithm {alg} is not allowed for this issuer")
        if content_type not in self.content_types:
            raise _policy(
                "policy-content-type",
                "the content type is not allowed for this issuer",
            )
        if self._subject_allowed(subject) is None:
            raise _policy("policy-subject", "the subject is not allowed for this issuer")


def _policy(code: str, message: str) -> VerificationError:
    return VerificationError(
        message, code=code, hint="Ask the service's administrator about your registration policy."
    )


@dataclass(frozen=True)
class Organization:
    """One organization's current registration settings."""

    name: str
    version: int
    issuers: tuple[str, ...]
    anchors: tuple[x509.Certificate, ...]
    keys: Mapping[bytes, Verifier]
    retired_keys: frozenset[bytes]
    revoked: frozenset[str]  # certificate SHA-256 fingerprints, hex
    policy: Policy
    roles: tuple[str, ...] = field(default=())
    #: CAs its devices' identity certificates chain to (device makers; docs/provenance.md).
    device_anchors: tuple[x509.Certificate, ...] = field(default=())


def _list(doc: Mapping[str, Any], name: str, *, required: bool = False) -> list[Any]:
    value = doc.get(name, None)
    if value is None:
        if required:
            raise InvalidInput(f"organization record: {name} is missing", code="org-record-invalid")
        return []
    if not isinstance(value, list) or len(value) > MAX_LIST:
        raise InvalidInput(
            f"organization record: {name} must be a list of at most {MAX_LIST}",
            code="org-record-invalid",
        )
    return value


def _strings(
    doc: Mapping[str, Any], name: str, *, required: bool = False, longest: int = MAX_STRING
) -> tuple[str, ...]:
    values = _list(doc, name, required=required)
    if not all(isinstance(v, str) and 0 < len(v) <= longest for v in values):
        raise InvalidInput(
            f"organization record: {name} must hold strings of 1..{longest} characters",
            code="org-record-invalid",
        )
    return tuple(values)


def load_json(data: bytes, message: str, *, code: str) -> object:
    """``data`` parsed as JSON, or :class:`InvalidInput` (``message``, ``code``) for anything
    that is not: bytes that are no text, text that is no JSON, and JSON nested deeper than
    the interpreter's recursion limit (``'[' * 4000`` fits in a few kilobytes). The one
    JSON reader of what a client sends: an organization record here, the service's request
    bodies (``service._admin``, ``service._provenance``)."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise InvalidInput(message, code=code) from None


def parse_org_record(payload: bytes, *, new: bool = False) -> Organization:
    """Read an organization record (JSON); :class:`InvalidInput` naming what is wrong.
    ``new``: a record to be registered now, held to the rules that came after records
    already in logs (a policy's ``algorithms`` may not be an empty list)."""
    doc = load_json(payload, "organization record is not JSON", code="org-record-invalid")
    if not isinstance(doc, dict):
        raise InvalidInput("organization record must be an object", code="org-record-invalid")
    _known_fields(doc, RECORD_FIELDS, "organization record")
    name, version = doc.get("org"), doc.get("version")
    if not isinstance(name, str) or not name or len(name) > 128:
        raise InvalidInput("organization record: org must be a name", code="org-record-invalid")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InvalidInput("organization record: version must be >= 1", code="org-record-invalid")
    anchors: list[x509.Certificate] = []
    for pem in _strings(doc, "anchors", longest=MAX_PEM):
        anchors += load_certificates(pem.encode())
    keys: dict[bytes, Verifier] = {}
    for entry in _list(doc, "keys"):
        if not isinstance(entry, dict):
            raise InvalidInput("organization record: keys hold objects", code="org-record-invalid")
        alg, raw = entry.get("alg"), entry.get("public_key")
        if alg not in ALGORITHMS or not isinstance(raw, str):
            raise InvalidInput(
                "organization record: a key needs alg and public_key (base64)",
                code="org-record-invalid",
            )
        try:
            verifier = verifier_from_bytes(alg, base64.b64decode(raw, validate=True))
        except ValueError:
            raise InvalidInput(
                "organization record: bad public_key", code="org-record-invalid"
            ) from None
        keys[key_id(verifier)] = verifier
    raw_policy = doc.get("policy", {})
    if not isinstance(raw_policy, dict):
        raise InvalidInput(
            "organization record: policy must be an object", code="org-record-invalid"
        )
    _known_fields(raw_policy, POLICY_FIELDS, "organization record: policy")
    algorithms = _strings(raw_policy, "algorithms")
    if not algorithms and new and "algorithms" in raw_policy:
        # Records logged before this rule read an empty list as left out: so do they still.
        raise InvalidInput(
            "organization record: policy algorithms must name at least one algorithm "
            "(left out, they are " + ", ".join(DEFAULT_ALGORITHMS) + ")",
            code="org-record-invalid",
        )
    algorithms = algorithms or DEFAULT_ALGORITHMS
    if set(algorithms) - set(ALGORITHMS):
        raise InvalidInput("organization record: unknown algorithm", code="org-record-invalid")
    max_size = raw_policy.get("max_size", 64 * 1024)
    if not isinstance(max_size, int) or not 0 < max_size <= MAX_STATEMENT_SIZE_LIMIT:
        raise InvalidInput(
            f"organization record: max_size must be 1..{MAX_STATEMENT_SIZE_LIMIT}",
            code="org-record-invalid",
        )
    return Organization(
        name=name,
        version=version,
        issuers=_strings(doc, "issuers", required=True),
        anchors=tuple(anchors),
        keys=keys,
        retired_keys=frozenset(bytes.fromhex(k) for k in _strings(doc, "retired_keys")),
        revoked=frozenset(_strings(doc, "revoked_certificates")),
        policy=Policy(
            content_types=_strings(raw_policy, "content_types"),
            subjects=_strings(raw_policy, "subjects"),
            algorithms=algorithms,
            max_size=max_size,
        ),
        roles=_strings(doc, "roles"),
        device_anchors=tuple(
            cert
            for pem in _strings(doc, "device_anchors", longest=MAX_PEM)
            for cert in load_certificates(pem.encode())
        ),
    )


def _known_fields(doc: Mapping[str, Any], known: frozenset[str], what: str) -> None:
    """A misspelt field would silently change nothing: refuse it (the name is not echoed)."""
    if not set(doc) <= known:
        raise InvalidInput(
            f"{what} has a field this version does not know (docs/scitt.md lists them)",
            code="org-record-invalid",
        )


class Registry:
    """The current organizations, folded from their records. Thread-safe."""

    def __init__(self) -> None:
        self._orgs: dict[str, Organization] = {}
        self._by_issuer: dict[str, str] = {}
        self._lock = threading.Lock()
        #: How many records have been applied: once it grew, a check refused before may
        #: be answered otherwise (``TransparencyService.check_current``).
        self.applied = 0

    def check(self, org: Organization) -> None:
        """Raise unless ``org`` may be applied as the next record (version, issuers)."""
        with self._lock:
            current = self._orgs.get(org.name)
            want = 1 if current is None else current.version + 1
            if org.version != want:
                raise InvalidInput(
                    f"organization {org.name} is at version {want - 1}; the next record is {want}",
                    code="org-version",
                )
            for issuer in org.issuers:
                owner = self._by_issuer.get(issuer)
                if owner is not None and owner != org.name:
                    raise InvalidInput(
                        f"issuer {issuer!r} belongs to another organization",
                        code="org-issuer-taken",
                    )

    def apply(self, org: Organization) -> None:
        self.check(org)
        with self._lock:
            old = self._orgs.get(org.name)
            if old is not None:
                for issuer in old.issuers:
                    self._by_issuer.pop(issuer, None)
            self._orgs[org.name] = org
            for issuer in org.issuers:
                self._by_issuer[issuer] = org.name
            self.applied += 1

    def load(self, payloads: Iterable[bytes]) -> None:
        """Fold stored records (registration order) into the registry."""
        for payload in payloads:
            self.apply(parse_org_record(payload))

    def for_issuer(self, issuer: str) -> Organization:
        with self._lock:
            name = self._by_issuer.get(issuer)
            org = None if name is None else self._orgs[name]
        if org is None:
            raise VerificationError(
                "the issuer is not registered with this service",
                code="issuer-unknown",
                hint="An administrator must onboard your organization and its issuer name.",
            )
        return org

    def name_of(self, issuer: str) -> str | None:
        """The name of the organization ``issuer`` belongs to, or None."""
        with self._lock:
            return self._by_issuer.get(issuer)

    def get(self, name: str) -> Organization | None:
        with self._lock:
            return self._orgs.get(name)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._orgs)
