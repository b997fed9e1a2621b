"""The provenance rules the transparency service applies when a statement is registered.

:func:`registration_rules` gives one :data:`~sealtrail.scitt.PayloadRule` per statement
kind, for ``TransparencyService(payload_rules=...)``. Each runs after the statement's
signature, chain and policy checks passed, and refuses (nothing is stored):

* a statement whose issuer's organization lacks the role that issues its kind
  (``provenance-role``: a manifest from an organization without the device-maker role);
* a payload that does not parse as its kind (the parser's codes, docs/provenance.md);
* a provenance statement in a hash envelope (``provenance-hash-envelope``): its payload is
  then a digest, and the rules need the content itself;
* a device manifest with a device whose identity chain does not lead to one of the
  organization's ``device_anchors`` (``manifest-device-untrusted``; ``manifest-no-device-ca``
  when it has none).

The rules that need the log's history (duplicates across manifests, one parent per child,
hand-offs, single-use nonces) come with the provenance index.
"""

from __future__ import annotations

from sealtrail.errors import InvalidInput, VerificationError
from sealtrail.scitt import Organization, PayloadRule, SignedStatement

from ._devicechain import DeviceChainValidator
from ._kinds import KINDS, Kind
from ._payloads import DeviceManifest

__all__ = ["registration_rules"]


def _rule_for(kind: Kind, devices: DeviceChainValidator) -> PayloadRule:
    def rule(statement: SignedStatement, org: Organization) -> None:
        if statement.payload_hash_alg is not None:
            raise InvalidInput(
                f"a {kind.name} statement must carry its payload, not a hash envelope",
                code="provenance-hash-envelope",
            )
        if kind.role not in org.roles:
            raise VerificationError(
                f"{kind.name} statements are issued by organizations with the "
                f"{kind.role} role, and the issuer's organization does not have it",
                code="provenance-role",
            )
        payload = kind.parse(statement.payload)
        if isinstance(payload, DeviceManifest):
            for i, device in enumerate(payload.devices):
                devices.validate(device.chain, org.device_anchors, where=f"devices[{i}]")

    return rule


def registration_rules(*, devices: DeviceChainValidator | None = None) -> dict[str, PayloadRule]:
    """content type -> the rule the transparency service runs for it."""
    devices = devices or DeviceChainValidator()
    return {content_type: _rule_for(kind, devices) for content_type, kind in KINDS.items()}
