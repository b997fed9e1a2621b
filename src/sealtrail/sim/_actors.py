"""The organizations of a supply chain: device makers, an assembler, a carrier and a data
center operator.

Each is an organization with its own CA and an X.509 statement-signing certificate (ECDSA
P-256, ES256) under it; its organization record (what an administrator registers with
``sealtrail org put``) names its role, its issuer, its CA as trust anchor and, for a
device maker, its device identity CAs. Its keys stay inside the object, as a device's do.
Each actor makes the payloads its role may state and signs them as signed statements
(:meth:`Actor.sign`), checked first with the service's own parser, as ``sealtrail
record`` does.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, NoReturn

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sealtrail.keys import ES256, EcdsaSigner
from sealtrail.provenance import (
    KINDS,
    Algorithm,
    Arrival,
    Assembly,
    AttestationResult,
    Challenge,
    ChildRef,
    Compliance,
    ComplianceState,
    Custody,
    CustodyEvent,
    DeviceIdentity,
    DeviceKind,
    DeviceManifest,
    DeviceRef,
    DigestAlgorithm,
    EarStatus,
    FirmwareRelease,
    Measurement,
    Node,
    Payload,
    Verdict,
    parse_attestation_result,
    parse_payload,
)
from sealtrail.scitt import sign_statement

from ._devices import (
    CaliptraDevice,
    CerberusDevice,
    FirmwareImage,
    RotDevice,
    TpmDevice,
)
from ._evidence import Evidence
from ._verifier import check_evidence
from ._x509 import (
    DEVICE_NOT_AFTER,
    DEVICE_NOT_BEFORE,
    PrivateKey,
    der,
    derive_mldsa_key,
    distinguished_name,
    issue,
)

__all__ = [
    "DEVICE_CLASSES",
    "Actor",
    "Answer",
    "Assembler",
    "Carrier",
    "DeviceMaker",
    "Operator",
]

#: How long before "now" an organization's certificates are valid from: long enough for a
#: statement dated in the past (a backdated attestation) to chain at its ``iat``.
CERT_BACKDATE = dt.timedelta(days=400)
CERT_LIFETIME = dt.timedelta(days=365)
#: The largest statement an organization's policy allows (docs/scitt.md ``max_size``).
MAX_STATEMENT = 1024 * 1024
DEVICE_CLASSES: Mapping[DeviceKind, type[RotDevice]] = {
    DeviceKind.CALIPTRA: CaliptraDevice,
    DeviceKind.CERBERUS: CerberusDevice,
    DeviceKind.TPM: TpmDevice,
}
_TIERS = {
    EarStatus.NONE: 0,
    EarStatus.AFFIRMING: 2,
    EarStatus.WARNING: 32,
    EarStatus.CONTRAINDICATED: 96,
}


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


class Actor:
    """An organization: its name, role, issuer, CA and statement-signing certificate."""

    ROLE: ClassVar[str]

    __slots__ = ("_ca", "_issuer", "_leaf", "_name", "_signer")

    def __init__(self, org: str, *, issuer: str | None = None) -> None:
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        subject = distinguished_name(f"{org} signing CA", org=org)
        self._ca = issue(
            subject=subject,
            public_key=ca_key.public_key(),
            issuer=subject,
            issuer_key=ca_key,
            ca=True,
            path_length=1,
            key_usage="ca",
            not_before=now - CERT_BACKDATE,
            not_after=now + 10 * CERT_LIFETIME,
        )
        key = ec.generate_private_key(ec.SECP256R1())
        self._leaf = issue(
            subject=distinguished_name(f"{org} statements", org=org),
            public_key=key.public_key(),
            issuer=subject,
            issuer_key=ca_key,
            ca=False,
            not_before=now - CERT_BACKDATE,
            not_after=now + CERT_LIFETIME,
            authority_key=ca_key.public_key(),
        )
        self._signer = EcdsaSigner(key)
        self._name = org
        self._issuer = issuer or f"https://{org}.example/signing"

    @property
    def name(self) -> str:
        return self._name

    @property
    def issuer(self) -> str:
        return self._issuer

    @property
    def anchor(self) -> x509.Certificate:
        """The organization's CA: the trust anchor its record registers."""
        return self._ca

    @property
    def certificate(self) -> bytes:
        """The statement-signing certificate (DER)."""
        return self._leaf.public_bytes(serialization.Encoding.DER)

    def record(self, *, version: int = 1) -> bytes:
        """The organization record an administrator registers (``sealtrail org put``)."""
        doc: dict[str, object] = {
            "org": self._name,
            "version": version,
            "roles": [self.ROLE],
            "issuers": [self._issuer],
            "anchors": [_pem(self._ca)],
            "policy": {
                "content_types": sorted(ct for ct, k in KINDS.items() if k.role == self.ROLE),
                "subjects": [f"urn:{self._name}:*"],
                "algorithms": [ES256],
                "max_size": MAX_STATEMENT,
            },
        }
        doc.update(self._record_extra())
        return json.dumps(doc, sort_keys=True).encode()

    def subject(self, about: str) -> str:
        """The statement subject for something this organization states facts about."""
        return f"urn:{self._name}:{about}"

    def sign(self, payload: Payload, *, about: str, issued_at: int | None = None) -> bytes:
        """``payload`` as a signed statement (COSE_Sign1, x5chain), checked first with the
        service's own parser."""
        data = payload.to_json()
        parse_payload(type(payload).CONTENT_TYPE, data)
        return sign_statement(
            self._signer,
            issuer=self._issuer,
            subject=self.subject(about),
            content_type=type(payload).CONTENT_TYPE,
            payload=data,
            x5chain=[self.certificate],
            issued_at=issued_at,
        )

    def _record_extra(self) -> dict[str, object]:
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._name!r})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("an organization's keys stay inside it: it cannot be pickled")


class DeviceMaker(Actor):
    """A silicon / device maker: device identity CAs (ECC P-384, and ML-DSA-87 when
    supported), firmware, devices made and provisioned from their CSRs, manifests and
    firmware releases."""

    ROLE = "device-maker"

    __slots__ = ("_device_cas", "_firmware", "_kind")

    def __init__(
        self,
        org: str,
        *,
        kind: DeviceKind,
        firmware: Sequence[FirmwareImage] = (),
        issuer: str | None = None,
    ) -> None:
        super().__init__(org, issuer=issuer)
        self._kind = kind
        self._firmware = tuple(firmware)
        self._device_cas: dict[str, tuple[PrivateKey, x509.Certificate]] = {}
        root_key = ec.generate_private_key(ec.SECP384R1())
        self._add_ca("ec", root_key, "Device Identity CA", None)
        if Algorithm.ML_DSA_87 in DEVICE_CLASSES[kind].identity_algorithms():
            # The ML-DSA-87 identities get their own issuing CA, certified by the P-384
            # root and carried in each identity chain: the record's one device anchor,
            # the P-384 root, serves both kinds of identity.
            key = derive_mldsa_key(secrets.token_bytes(32), "device-ca")
            self._add_ca("ml-dsa", key, "Device Identity CA ML-DSA-87", root_key)

    def _add_ca(self, which: str, key: PrivateKey, label: str, root_key: PrivateKey | None) -> None:
        subject = distinguished_name(f"{self._name} {label}", org=self._name)
        root = self._device_cas["ec"][1].subject if root_key is not None else subject
        certificate = issue(
            subject=subject,
            public_key=key.public_key(),
            issuer=root,
            issuer_key=root_key or key,
            ca=True,
            key_usage="ca",
            not_before=DEVICE_NOT_BEFORE,
            not_after=DEVICE_NOT_AFTER,
            authority_key=None if root_key is None else root_key.public_key(),
        )
        self._device_cas[which] = (key, certificate)

    @property
    def kind(self) -> DeviceKind:
        return self._kind

    @property
    def firmware(self) -> tuple[FirmwareImage, ...]:
        """The firmware its devices boot, in boot order."""
        return self._firmware

    @property
    def device_cas(self) -> tuple[x509.Certificate, ...]:
        """The device identity CAs its organization record registers (``device_anchors``)."""
        return (self._device_cas["ec"][1],)

    def _record_extra(self) -> dict[str, object]:
        return {"device_anchors": [_pem(c) for c in self.device_cas]}

    def manufacture(self, serial: str, *, algorithm: Algorithm | None = None) -> RotDevice:
        """Make a device: it derives its identity keys; each identity certificate is issued
        from the device's own signed request; then it boots the maker's firmware."""
        device = DEVICE_CLASSES[self._kind](serial, vendor=self._name, algorithm=algorithm)
        for alg in device.identity_algorithms():
            intermediates = (
                (der(self._device_cas["ml-dsa"][1]),) if alg is Algorithm.ML_DSA_87 else ()
            )
            device.provision(self.issue_identity(device, alg), algorithm=alg, issuers=intermediates)
        device.boot(self._firmware)
        return device

    def issue_identity(self, device: RotDevice, algorithm: Algorithm) -> bytes:
        """The identity certificate (DER) for the key of the device's signed request."""
        request = x509.load_der_x509_csr(device.identity_csr(algorithm))
        if not request.is_signature_valid:
            raise ValueError("the device's request is not signed by its key")
        ca_key, ca = self._device_cas["ml-dsa" if algorithm is Algorithm.ML_DSA_87 else "ec"]
        profile = device.identity_profile(algorithm)
        public = request.public_key()
        return issue(
            subject=x509.Name([]) if profile.empty_subject else request.subject,
            public_key=public,  # type: ignore[arg-type]
            issuer=ca.subject,
            issuer_key=ca_key,
            ca=profile.ca,
            path_length=profile.path_length,
            key_usage=profile.key_usage,
            extensions=profile.extensions,
            authority_key=ca_key.public_key(),
        ).public_bytes(serialization.Encoding.DER)

    def manifest(
        self, batch_id: str, devices: Iterable[RotDevice | DeviceIdentity]
    ) -> DeviceManifest:
        return DeviceManifest(
            batch_id, tuple(d if isinstance(d, DeviceIdentity) else d.identity() for d in devices)
        )

    def releases(self) -> list[FirmwareRelease]:
        """A firmware release statement for each image it ships."""
        return [
            FirmwareRelease(
                component=image.component,
                version=image.version,
                security_version=image.security_version,
                measurements=(Measurement(DigestAlgorithm(image.alg), image.digest),),
            )
            for image in self._firmware
        ]


class Assembler(Actor):
    """An ODM / integrator: devices into boards and blades, those into servers and racks."""

    ROLE = "assembler"

    __slots__ = ()

    def assemble(
        self,
        parent: Node,
        children: Iterable[Node | RotDevice | str],
        *,
        removed: Iterable[Node | RotDevice | str] = (),
        reason: str | None = None,
    ) -> Assembly:
        """``children`` installed in ``parent`` (devices by object or device id)."""
        return Assembly(parent, _refs(children), _refs(removed), reason)


def _refs(items: Iterable[Node | RotDevice | str]) -> tuple[ChildRef, ...]:
    refs: list[ChildRef] = []
    for item in items:
        if isinstance(item, Node):
            refs.append(item)
        else:
            refs.append(DeviceRef(item if isinstance(item, str) else item.device_id))
    return tuple(refs)


class Carrier(Actor):
    """A freight carrier: custody hand-offs with tamper-evident seals."""

    ROLE = "carrier"

    __slots__ = ()

    def custody(
        self,
        event: CustodyEvent,
        *,
        shipment_id: str,
        contents: Sequence[str],
        seals: Sequence[str],
        from_org: str,
        to_org: str,
        place: str,
        when: dt.datetime | None = None,
    ) -> Custody:
        return Custody(
            shipment_id=shipment_id,
            event=event,
            from_org=from_org,
            to_org=to_org,
            contents=tuple(contents),
            seals=tuple(seals),
            time=(when or dt.datetime.now(dt.UTC)).replace(microsecond=0),
            place=place,
        )


@dataclass(frozen=True, slots=True)
class Answer:
    """One device's answer to a challenge, as the verifier received it."""

    device_id: str
    identity: bytes
    evidence: Evidence


class Operator(Actor):
    """A data center operator: arrival checks, attestation and compliance.

    Its verifier (:func:`check_evidence`) knows the firmware releases it was told about
    (:meth:`trust`) and each device's identity certificate.
    """

    ROLE = "operator"

    __slots__ = ("_released",)

    def __init__(self, org: str, *, issuer: str | None = None) -> None:
        super().__init__(org, issuer=issuer)
        self._released: set[tuple[str, str, str]] = set()

    def trust(self, releases: Iterable[FirmwareRelease]) -> None:
        """Take these releases' measurements as reference values."""
        for release in releases:
            for m in release.measurements:
                self._released.add((release.component, m.alg.value, m.digest))

    @staticmethod
    def challenge(devices: Iterable[RotDevice], nonce: bytes) -> list[Answer]:
        """Challenge each device with ``nonce``; its identity and evidence, by device id."""
        return [Answer(d.device_id, d.identity_certificate(), d.attest(nonce)) for d in devices]

    def appraise(self, answer: Answer, nonce: bytes) -> tuple[EarStatus, tuple[str, ...]]:
        reasons = check_evidence(answer.identity, answer.evidence, nonce, released=self._released)
        return (EarStatus.CONTRAINDICATED if reasons else EarStatus.AFFIRMING), reasons

    def arrival(
        self,
        *,
        shipment_id: str,
        server_serial: str,
        devices: Sequence[RotDevice],
        nonces: Sequence[bytes] | None = None,
        seals_intact: bool = True,
        claim_pass: bool = False,
    ) -> Arrival:
        """Check a server on arrival: every device proves possession of its identity key
        (its chain and its signature over a fresh nonce checked: one of ``nonces`` each, as
        the service issued them, else drawn here), the seals are looked at. ``claim_pass``
        records a pass whatever was found (a careless or bribed operator)."""
        if nonces is None:
            nonces = [secrets.token_bytes(32) for _ in devices]
        if len(nonces) != len(devices):
            raise ValueError("one nonce per device")
        challenges = []
        ordered = sorted(devices, key=lambda d: d.device_id)
        for device, nonce in zip(ordered, nonces, strict=True):
            (answer,) = self.challenge([device], nonce)
            ok = claim_pass or not check_evidence(answer.identity, answer.evidence, nonce)
            challenges.append(Challenge(answer.device_id, nonce.hex(), ok))
        seals_intact = seals_intact or claim_pass
        reasons = [] if seals_intact else ["a seal is broken"]
        reasons += [
            f"device {c.device_id[:16]} failed its challenge" for c in challenges if not c.ok
        ]
        return Arrival(
            shipment_id=shipment_id,
            server_serial=server_serial,
            seals_intact=seals_intact,
            devices_challenged=tuple(challenges),
            result=Verdict.FAIL if reasons else Verdict.PASS,
            reasons=tuple(reasons),
        )

    def attestation(
        self,
        server_serial: str,
        answers: Sequence[Answer],
        nonce: bytes,
        *,
        claim: EarStatus | None = None,
    ) -> AttestationResult:
        """The attestation result for a server's answers to ``nonce``: each device's
        evidence with the verifier's appraisal. ``claim`` records that status for every
        device instead (a verifier that was fooled, or lies)."""
        devices = []
        worst = EarStatus.AFFIRMING
        for answer in sorted(answers, key=lambda a: a.device_id):
            status, reasons = (claim, ()) if claim is not None else self.appraise(answer, nonce)
            if _TIERS[status] > _TIERS[worst]:
                worst = status
            devices.append(
                {
                    "device_id": answer.device_id,
                    "status": status.value,
                    "reasons": list(reasons),
                    "evidence": answer.evidence.to_doc(),
                }
            )
        doc = {
            "server_serial": server_serial,
            "nonce": nonce.hex(),
            "status": worst.value,
            "trustworthiness": {
                "executables": _TIERS[worst],
                "hardware": _TIERS[worst],
                "instance-identity": _TIERS[worst],
            },
            "devices": devices,
        }
        # The attestation-result payload carries the evidence as its schema says; parsing
        # the JSON builds the typed value (and checks it as the service will).
        return parse_attestation_result(json.dumps(doc).encode())

    @staticmethod
    def move(
        server_serial: str, from_state: ComplianceState, to_state: ComplianceState, reason: str
    ) -> Compliance:
        return Compliance(server_serial, from_state, to_state, reason)
