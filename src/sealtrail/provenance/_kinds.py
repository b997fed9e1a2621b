"""The statement kinds: content type -> parser and the organization role that may issue it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from sealtrail.errors import InvalidInput

from ._payloads import (
    Arrival,
    Assembly,
    AttestationResult,
    Compliance,
    Custody,
    DeviceManifest,
    FirmwareRelease,
    PolicyChange,
    parse_arrival,
    parse_assembly,
    parse_attestation_result,
    parse_compliance,
    parse_custody,
    parse_device_manifest,
    parse_firmware_release,
)

__all__ = ["KINDS", "Kind", "Payload", "Role", "parse_payload"]

Payload = (
    DeviceManifest
    | FirmwareRelease
    | Assembly
    | Custody
    | Arrival
    | AttestationResult
    | Compliance
    | PolicyChange
)


class Role(StrEnum):
    """An organization role (as in the organization record's ``roles``) that issues statements."""

    DEVICE_MAKER = "device-maker"
    ASSEMBLER = "assembler"
    CARRIER = "carrier"
    OPERATOR = "operator"


@dataclass(frozen=True, slots=True)
class Kind:
    """One statement kind: its name, content type, issuing role and parser."""

    name: str
    content_type: str
    role: Role
    parse: Callable[[bytes], Payload]
    summary: str


def _kind(
    payload_type: type[Payload], role: Role, parse: Callable[[bytes], Payload], summary: str
) -> Kind:
    return Kind(payload_type.KIND, payload_type.CONTENT_TYPE, role, parse, summary)


#: content type -> :class:`Kind`, one per statement kind.
KINDS: Mapping[str, Kind] = MappingProxyType(
    {
        k.content_type: k
        for k in (
            _kind(
                DeviceManifest,
                Role.DEVICE_MAKER,
                parse_device_manifest,
                "a batch of root-of-trust device identities",
            ),
            _kind(
                FirmwareRelease,
                Role.DEVICE_MAKER,
                parse_firmware_release,
                "a firmware release's reference measurements",
            ),
            _kind(Assembly, Role.ASSEMBLER, parse_assembly, "children installed in a parent"),
            _kind(Custody, Role.CARRIER, parse_custody, "a shipment shipped or received"),
            _kind(Arrival, Role.OPERATOR, parse_arrival, "a server verified on arrival"),
            _kind(
                AttestationResult,
                Role.OPERATOR,
                parse_attestation_result,
                "a server's attestation appraisal",
            ),
            _kind(Compliance, Role.OPERATOR, parse_compliance, "a compliance state change"),
        )
    }
)


def parse_payload(content_type: str, payload: bytes) -> Payload:
    """Parse a provenance statement's payload by its content type.

    Raises :class:`InvalidInput` (``provenance-unknown-type`` for a content type that is not
    a provenance kind) or :class:`~sealtrail.errors.TooLarge`, each with a stable code.
    """
    kind = KINDS.get(content_type)
    if kind is None:
        raise InvalidInput(
            "the content type is not a provenance statement kind",
            code="provenance-unknown-type",
        )
    return kind.parse(payload)
