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

* a device manifest with a device whose identity key another registered manifest already
  holds (``manifest-cloned-device``: a cloned identity). Re-registering the same manifest
  statement is not a clone. A manifest that was accepted but then never stored (the store
  failed) does not hold its devices.

The other rules that need the log's history (one parent per child, hand-offs, single-use
nonces) come with the provenance index.
"""

from __future__ import annotations

from sealtrail.errors import InvalidInput, VerificationError
from sealtrail.scitt import Organization, PayloadRule, RuleContext, SignedStatement

from ._devicechain import DeviceChainValidator
from ._kinds import KINDS, Kind
from ._payloads import DeviceManifest, parse_device_manifest

__all__ = ["registration_rules"]


class _DeviceOwners:
    """device id -> leaf entry of the manifest that registered it; loaded on first use."""

    def __init__(self, content_type: str) -> None:
        self.content_type = content_type
        self._owners: dict[str, bytes] | None = None

    def check_and_claim(self, manifest: DeviceManifest, entry: bytes, context: RuleContext) -> None:
        owners = self._load(context)
        for i, device in enumerate(manifest.devices):
            owner = owners.get(device.device_id)
            if owner is not None and owner != entry and context.is_registered(owner):
                raise VerificationError(
                    f"devices[{i}]: this identity key is already registered by another "
                    "manifest (a cloned identity)",
                    code="manifest-cloned-device",
                )
        # All devices passed: claim them (the rules run one at a time on the event loop).
        for device in manifest.devices:
            owners[device.device_id] = entry

    def _load(self, context: RuleContext) -> dict[str, bytes]:
        if self._owners is None:
            owners: dict[str, bytes] = {}
            for entry, payload in context.stored_payloads(self.content_type):
                for device in parse_device_manifest(payload).devices:
                    owners.setdefault(device.device_id, entry)
            self._owners = owners
        return self._owners


def _rule_for(kind: Kind, devices: DeviceChainValidator, owners: _DeviceOwners) -> PayloadRule:
    def rule(statement: SignedStatement, org: Organization, context: RuleContext) -> None:
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
            owners.check_and_claim(payload, statement.leaf_entry, context)

    return rule


def registration_rules(*, devices: DeviceChainValidator | None = None) -> dict[str, PayloadRule]:
    """content type -> the rule the transparency service runs for it."""
    devices = devices or DeviceChainValidator()
    owners = _DeviceOwners(DeviceManifest.CONTENT_TYPE)
    return {content_type: _rule_for(kind, devices, owners) for content_type, kind in KINDS.items()}
