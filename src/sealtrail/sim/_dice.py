"""The TCG DICE certificate extensions a DICE layer puts in the certificate it issues for the
next layer's key: ``DiceTcbInfo`` (what was measured) and ``TcbUeid`` (which device).

From the TCG DICE Attestation Architecture (version 1.1), as DER::

    tcg-dice-TcbInfo OBJECT IDENTIFIER ::= { 2 23 133 5 4 1 }
    DiceTcbInfo ::= SEQUENCE {
        vendor     [0] IMPLICIT UTF8String OPTIONAL,
        model      [1] IMPLICIT UTF8String OPTIONAL,
        version    [2] IMPLICIT UTF8String OPTIONAL,
        svn        [3] IMPLICIT INTEGER OPTIONAL,
        layer      [4] IMPLICIT INTEGER OPTIONAL,
        index      [5] IMPLICIT INTEGER OPTIONAL,
        fwids      [6] IMPLICIT FWIDLIST OPTIONAL,
        flags      [7] IMPLICIT OperationalFlags OPTIONAL,
        vendorInfo [8] IMPLICIT OCTET STRING OPTIONAL,
        type       [9] IMPLICIT OCTET STRING OPTIONAL }
    FWIDLIST ::= SEQUENCE SIZE (1..MAX) OF FWID
    FWID ::= SEQUENCE { hashAlg OBJECT IDENTIFIER, digest OCTET STRING }

    tcg-dice-Ueid OBJECT IDENTIFIER ::= { 2 23 133 5 4 4 }
    TcbUeid ::= SEQUENCE { ueid OCTET STRING }

The simulator writes vendor, model, version, svn, layer and fwids (and type, when set);
``flags`` and ``vendorInfo`` are read past but not kept.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from . import _der

__all__ = [
    "HASH_OIDS",
    "TCB_INFO_OID",
    "UEID_OID",
    "Fwid",
    "TcbInfo",
    "decode_tcb_info",
    "decode_ueid",
    "encode_tcb_info",
    "encode_ueid",
    "tcb_info_of",
]

TCB_INFO_OID = x509.ObjectIdentifier("2.23.133.5.4.1")
UEID_OID = x509.ObjectIdentifier("2.23.133.5.4.4")
#: The NIST hash algorithm identifiers an FWID names, by the names provenance uses.
HASH_OIDS = {
    "sha-256": "2.16.840.1.101.3.4.2.1",
    "sha-384": "2.16.840.1.101.3.4.2.2",
    "sha-512": "2.16.840.1.101.3.4.2.3",
}
_HASH_NAMES = {oid: name for name, oid in HASH_OIDS.items()}
_TEXT_FIELDS = {0: "vendor", 1: "model", 2: "version"}
_INT_FIELDS = {3: "svn", 4: "layer", 5: "index"}
_FWIDS, _TYPE = 6, 9


@dataclass(frozen=True, slots=True)
class Fwid:
    """One firmware measurement: its hash algorithm (``sha-384``...) and digest."""

    alg: str
    digest: bytes


@dataclass(frozen=True, slots=True)
class TcbInfo:
    """A ``DiceTcbInfo``: the measured layer's identity and its firmware measurements."""

    vendor: str | None = None
    model: str | None = None
    version: str | None = None
    svn: int | None = None
    layer: int | None = None
    index: int | None = None
    fwids: tuple[Fwid, ...] = ()
    type: bytes | None = None


def encode_tcb_info(info: TcbInfo) -> bytes:
    """The DER of a ``DiceTcbInfo`` (the extension's value)."""
    parts = []
    for number, name in _TEXT_FIELDS.items():
        value = getattr(info, name)
        if value is not None:
            parts.append(_der.tlv(_der.context(number), value.encode("utf-8")))
    for number, name in _INT_FIELDS.items():
        value = getattr(info, name)
        if value is not None:
            parts.append(_der.tlv(_der.context(number), _der.encode_integer(value)))
    if info.fwids:
        fwids = b"".join(
            _der.tlv(
                _der.SEQUENCE,
                _der.tlv(_der.OID, _der.encode_oid(HASH_OIDS[f.alg]))
                + _der.tlv(_der.OCTET_STRING, f.digest),
            )
            for f in info.fwids
        )
        parts.append(_der.tlv(_der.context(_FWIDS, constructed=True), fwids))
    if info.type is not None:
        parts.append(_der.tlv(_der.context(_TYPE), info.type))
    return _der.tlv(_der.SEQUENCE, b"".join(parts))


def decode_tcb_info(der: bytes) -> TcbInfo:
    """Read a ``DiceTcbInfo``; ``ValueError`` for anything else (or an unknown hash)."""
    outer = list(_der.elements(der))
    if len(outer) != 1 or outer[0][0] != _der.SEQUENCE:
        raise ValueError("a DiceTcbInfo is one SEQUENCE")
    fields: dict[str, object] = {}
    last = -1
    for tag, content in _der.elements(outer[0][1]):
        number = tag & 0x1F
        if tag & 0xC0 != 0x80 or number <= last:
            raise ValueError("DiceTcbInfo fields are context-tagged, in order")
        last = number
        if number in _TEXT_FIELDS:
            fields[_TEXT_FIELDS[number]] = content.decode("utf-8")
        elif number in _INT_FIELDS:
            fields[_INT_FIELDS[number]] = _der.read_integer(content)
        elif number == _FWIDS:
            fields["fwids"] = tuple(_fwid(item) for item in _der.elements(content))
        elif number == _TYPE:
            fields["type"] = content
    return TcbInfo(**fields)  # type: ignore[arg-type]


def _fwid(item: tuple[int, bytes]) -> Fwid:
    tag, content = item
    parts = list(_der.elements(content))
    if tag != _der.SEQUENCE or [t for t, _ in parts] != [_der.OID, _der.OCTET_STRING]:
        raise ValueError("an FWID is SEQUENCE { OBJECT IDENTIFIER, OCTET STRING }")
    oid = _der.decode_oid(parts[0][1])
    if oid not in _HASH_NAMES:
        raise ValueError(f"an FWID names an unknown hash algorithm {oid}")
    return Fwid(_HASH_NAMES[oid], parts[1][1])


def encode_ueid(ueid: bytes) -> bytes:
    """The DER of a ``TcbUeid``."""
    return _der.tlv(_der.SEQUENCE, _der.tlv(_der.OCTET_STRING, ueid))


def decode_ueid(der: bytes) -> bytes:
    outer = list(_der.elements(der))
    if len(outer) != 1 or outer[0][0] != _der.SEQUENCE:
        raise ValueError("a TcbUeid is one SEQUENCE")
    inner = list(_der.elements(outer[0][1]))
    if len(inner) != 1 or inner[0][0] != _der.OCTET_STRING:
        raise ValueError("a TcbUeid holds one OCTET STRING")
    return inner[0][1]


def tcb_info_of(certificate: x509.Certificate) -> TcbInfo | None:
    """The ``DiceTcbInfo`` a certificate carries, or ``None``."""
    try:
        extension = certificate.extensions.get_extension_for_oid(TCB_INFO_OID)
    except x509.ExtensionNotFound:
        return None
    value = extension.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise ValueError("the DiceTcbInfo extension is not raw DER")
    return decode_tcb_info(value.value)
