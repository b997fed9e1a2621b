"""Simulated root-of-trust devices: Caliptra-like, Cerberus-like and TPM-like.

Each device holds a unique device secret (the UDS, random) from which it derives its keys,
as DICE hardware does; **no private key ever leaves the object** — no attribute, method
or return value exposes one, and a device can be neither copied nor pickled. What a device
gives out: certificate signing requests for its identity keys (signed by those keys), its
certificates, its measurements and evidence.

* **Caliptra-like**: IDevID (issued by the maker from the device's CSR) → LDevID → FMC
  alias → runtime alias, each issued by the layer below with the next key. The alias keys
  are derived from a compound device identifier that folds in the measured firmware, so
  other firmware means other alias keys; each alias certificate carries a TCG DICE
  ``DiceTcbInfo`` (OID 2.23.133.5.4.1) with its layer's firmware measurement as FWID. An
  ECC P-384 chain, and an ML-DSA-87 chain beside it when this cryptography supports
  ML-DSA; the manifest registers one of them (``algorithm``).
* **Cerberus-like** (the RIoT model): a DeviceID identity (P-384) and one alias key for
  the measured firmware, certified by the DeviceID key with a ``DiceTcbInfo``.
* **TPM-like**: an endorsement key (P-256) with an EK certificate in the TCG profile's
  shape (empty subject, the TPM's manufacturer, model and version in a critical
  subjectAltName). A simplification: the EK signs the evidence itself; a real EK only
  decrypts, and an attestation key is certified through credential activation.

A device answers a challenge (:meth:`RotDevice.attest`) by signing the verifier's nonce and
its measurements with its signing key (runtime alias, alias or EK) in the project's
evidence format, with the alias certificates that lead to its identity.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, NoReturn

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sealtrail.provenance import Algorithm, DeviceIdentity, DeviceKind

from ._dice import TCB_INFO_OID, UEID_OID, Fwid, TcbInfo, encode_tcb_info, encode_ueid
from ._evidence import Evidence, ReportedMeasurement, evidence_message, sign_message
from ._x509 import (
    ML_DSA_SUPPORTED,
    PrivateKey,
    PublicKey,
    cdi,
    der,
    derive_ec_key,
    derive_mldsa_key,
    dice_name,
    hash_for,
    issue,
    spki,
)

__all__ = [
    "CaliptraDevice",
    "CerberusDevice",
    "FirmwareImage",
    "IdentityProfile",
    "RotDevice",
    "TpmDevice",
]

_HASHES = {"sha-256": hashlib.sha256, "sha-384": hashlib.sha384, "sha-512": hashlib.sha512}
#: Size of a simulated firmware image, in bytes.
IMAGE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class FirmwareImage:
    """A firmware image: a component's version, security version and bytes, and the hash a
    device measures it with. Images built from the same name are the same bytes."""

    component: str
    version: str
    security_version: int
    alg: str
    data: bytes = field(repr=False)

    @classmethod
    def build(cls, component: str, version: str, security_version: int, alg: str) -> FirmwareImage:
        """A deterministic image for ``component`` ``version`` (SHAKE-256 of its name)."""
        seed = f"sealtrail-sim firmware {component} {version}".encode()
        return cls(
            component, version, security_version, alg, hashlib.shake_256(seed).digest(IMAGE_SIZE)
        )

    @property
    def digest(self) -> str:
        return _HASHES[self.alg](self.data).hexdigest()

    def measurement(self) -> ReportedMeasurement:
        return ReportedMeasurement(self.component, self.alg, self.digest)

    def tampered(self) -> FirmwareImage:
        """The same image with one byte changed: what an attacker's implant looks like."""
        data = bytearray(self.data)
        data[len(data) // 2] ^= 0x01
        return FirmwareImage(
            self.component, self.version, self.security_version, self.alg, bytes(data)
        )


@dataclass(frozen=True, slots=True)
class IdentityProfile:
    """How a maker issues a device's identity certificate (the rest comes from the CSR)."""

    ca: bool
    path_length: int | None
    key_usage: str
    extensions: tuple[tuple[x509.ExtensionType, bool], ...] = ()
    empty_subject: bool = False


class _Layer:
    """One identity chain's keys inside a device: never handed out."""

    __slots__ = ("alias_chain", "identity", "identity_key", "issuers", "signing_key")

    def __init__(self, identity_key: PrivateKey) -> None:
        self.identity_key = identity_key
        self.identity: x509.Certificate | None = None
        self.issuers: tuple[bytes, ...] = ()
        self.signing_key: PrivateKey | None = None
        self.alias_chain: tuple[bytes, ...] = ()


class RotDevice:
    """A root-of-trust device. Subclasses say how it derives its keys and certificates."""

    KIND: ClassVar[DeviceKind]
    MODEL: ClassVar[str]
    #: The identity chains a device of this kind holds, by algorithm.
    ALGORITHMS: ClassVar[tuple[Algorithm, ...]]
    #: How many firmware images it boots, in boot order.
    LAYERS: ClassVar[int] = 1

    __slots__ = ("_algorithm", "_firmware", "_layers", "_secret", "_serial", "_vendor")

    def __init__(self, serial: str, *, vendor: str, algorithm: Algorithm | None = None) -> None:
        algorithm = algorithm or self.ALGORITHMS[0]
        if algorithm not in self.identity_algorithms():
            raise ValueError(f"a {self.KIND.value} device has no {algorithm.value} identity here")
        self._serial = serial
        self._vendor = vendor
        self._algorithm = algorithm
        self._secret = secrets.token_bytes(48)  # the UDS: fused at manufacture, never read out
        self._layers = {a: _Layer(self._derive_identity(a)) for a in self.identity_algorithms()}
        self._firmware: tuple[FirmwareImage, ...] = ()

    # -- what anyone may see ----------------------------------------------------------------

    @property
    def kind(self) -> DeviceKind:
        return self.KIND

    @property
    def serial(self) -> str:
        return self._serial

    @property
    def vendor(self) -> str:
        return self._vendor

    @property
    def algorithm(self) -> Algorithm:
        """The algorithm of the identity registered for this device."""
        return self._algorithm

    @classmethod
    def identity_algorithms(cls) -> tuple[Algorithm, ...]:
        return tuple(a for a in cls.ALGORITHMS if a is not Algorithm.ML_DSA_87 or ML_DSA_SUPPORTED)

    @classmethod
    def identity_profile(cls, algorithm: Algorithm) -> IdentityProfile:
        """What the maker puts in this kind's identity certificate."""
        return IdentityProfile(ca=True, path_length=None, key_usage="sign")

    def identity_csr(self, algorithm: Algorithm | None = None) -> bytes:
        """A PKCS#10 request (DER) for an identity certificate, signed by the identity key."""
        layer = self._layer(algorithm)
        public = layer.identity_key.public_key()
        builder = x509.CertificateSigningRequestBuilder().subject_name(
            dice_name(f"{self.MODEL} {self._identity_role()}", public)
        )
        request = builder.sign(layer.identity_key, hash_for(layer.identity_key))
        return request.public_bytes(serialization.Encoding.DER)

    def provision(
        self,
        certificate: bytes,
        *,
        algorithm: Algorithm | None = None,
        issuers: Sequence[bytes] = (),
    ) -> None:
        """Store the identity certificate the maker issued (it must be for our key) and the
        intermediate CA certificates above it, if any (DER, nearest first)."""
        layer = self._layer(algorithm)
        cert = x509.load_der_x509_certificate(certificate)
        if spki(layer.identity_key.public_key()) != spki(cert.public_key()):  # type: ignore[arg-type]
            raise ValueError("the certificate is not for this device's identity key")
        layer.identity = cert
        layer.issuers = tuple(issuers)
        if self._firmware:
            self.boot(self._firmware)

    def identity_certificate(self, algorithm: Algorithm | None = None) -> bytes:
        layer = self._layer(algorithm)
        if layer.identity is None:
            raise ValueError(f"device {self._serial} has no identity certificate yet")
        return der(layer.identity)

    def identity(self) -> DeviceIdentity:
        """The device as a manifest lists it: kind, serial, identity chain (the identity
        certificate, then any intermediate CAs up to the maker's device CA), algorithm."""
        return DeviceIdentity(
            kind=self.KIND,
            serial=self._serial,
            chain=(self.identity_certificate(), *self._layer(None).issuers),
            algorithm=self._algorithm,
        )

    @property
    def device_id(self) -> str:
        return self.identity().device_id

    @property
    def firmware(self) -> tuple[FirmwareImage, ...]:
        return self._firmware

    def boot(self, firmware: Sequence[FirmwareImage]) -> None:
        """Boot ``firmware`` (one image per layer, in order): measure it, derive the alias
        keys for what was measured, and issue their certificates."""
        images = tuple(firmware)
        if len(images) != self.LAYERS:
            raise ValueError(f"a {self.KIND.value} device boots {self.LAYERS} image(s)")
        self._firmware = images
        for algorithm, layer in self._layers.items():
            if layer.identity is not None:
                layer.signing_key, layer.alias_chain = self._derive_aliases(algorithm, layer)

    def measurements(self) -> tuple[ReportedMeasurement, ...]:
        """What the device measured at boot, one per firmware layer."""
        return tuple(image.measurement() for image in self._firmware)

    def alias_chain(self, algorithm: Algorithm | None = None) -> tuple[bytes, ...]:
        """The alias certificates (DER, leaf first) from the signing key to the identity."""
        return self._layer(algorithm).alias_chain

    def attest(self, nonce: bytes, *, algorithm: Algorithm | None = None) -> Evidence:
        """Answer a challenge: sign ``nonce`` and the measurements with the signing key."""
        layer = self._layer(algorithm)
        if layer.signing_key is None:
            raise ValueError(f"device {self._serial} is not provisioned and booted")
        measured = self.measurements()
        signature = sign_message(layer.signing_key, evidence_message(nonce, measured))
        return Evidence(chain=layer.alias_chain, measurements=measured, signature=signature)

    # -- never: keys stay in the device ---------------------------------------------------

    def __repr__(self) -> str:
        return f"{type(self).__name__}(serial={self._serial!r}, algorithm={self._algorithm.value})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a simulated device cannot be pickled: its keys stay inside it")

    def __copy__(self) -> NoReturn:
        raise TypeError("a simulated device cannot be copied: its keys stay inside it")

    def __deepcopy__(self, memo: object) -> NoReturn:
        raise TypeError("a simulated device cannot be copied: its keys stay inside it")

    # -- for subclasses ---------------------------------------------------------------------

    def _layer(self, algorithm: Algorithm | None) -> _Layer:
        try:
            return self._layers[algorithm or self._algorithm]
        except KeyError:
            raise ValueError(f"device {self._serial} has no {algorithm} identity") from None

    def _identity_role(self) -> str:
        return "IDevID"

    def _derive_identity(self, algorithm: Algorithm) -> PrivateKey:
        return _derive(self._secret, f"identity/{algorithm.value}", algorithm)

    def _derive_aliases(
        self, algorithm: Algorithm, layer: _Layer
    ) -> tuple[PrivateKey, tuple[bytes, ...]]:
        """The signing key and alias chain for the booted firmware (default: the identity
        key signs, no alias)."""
        return layer.identity_key, ()

    def _tcb_info(self, image: FirmwareImage, layer: int) -> tuple[x509.ExtensionType, bool]:
        info = TcbInfo(
            vendor=self._vendor,
            model=self.MODEL,
            version=image.version,
            svn=image.security_version,
            layer=layer,
            fwids=(Fwid(image.alg, bytes.fromhex(image.digest)),),
        )
        return x509.UnrecognizedExtension(TCB_INFO_OID, encode_tcb_info(info)), True

    def _ueid(self, public: PublicKey) -> tuple[x509.ExtensionType, bool]:
        ueid = b"\x01" + hashlib.sha256(spki(public)).digest()[:16]  # EAT UEID type RAND
        return x509.UnrecognizedExtension(UEID_OID, encode_ueid(ueid)), False


def _derive(secret: bytes, label: str, algorithm: Algorithm) -> PrivateKey:
    if algorithm is Algorithm.ML_DSA_87:
        return derive_mldsa_key(secret, label)
    curve = ec.SECP384R1() if algorithm is Algorithm.ES384 else ec.SECP256R1()
    return derive_ec_key(secret, label, curve)


class CaliptraDevice(RotDevice):
    """Caliptra-like: IDevID → LDevID → FMC alias → runtime alias (see the module docs).

    Boots two images: the FMC (first mutable code), then the runtime firmware.
    """

    KIND = DeviceKind.CALIPTRA
    MODEL = "Caliptra-like RoT"
    ALGORITHMS = (Algorithm.ES384, Algorithm.ML_DSA_87)
    LAYERS = 2

    __slots__ = ()

    @classmethod
    def identity_profile(cls, algorithm: Algorithm) -> IdentityProfile:
        return IdentityProfile(ca=True, path_length=2, key_usage="sign")

    def _derive_aliases(
        self, algorithm: Algorithm, layer: _Layer
    ) -> tuple[PrivateKey, tuple[bytes, ...]]:
        assert layer.identity is not None
        fmc, runtime = self._firmware
        label = algorithm.value
        # ROM: the LDevID from the device secret and field entropy (here: the same secret).
        ldevid_key = _derive(self._secret, f"ldevid/{label}", algorithm)
        ldevid = issue(
            subject=dice_name(f"{self.MODEL} LDevID", ldevid_key.public_key()),
            public_key=ldevid_key.public_key(),
            issuer=layer.identity.subject,
            issuer_key=layer.identity_key,
            ca=True,
            path_length=1,
            extensions=(self._ueid(ldevid_key.public_key()),),
            authority_key=layer.identity_key.public_key(),
        )
        # ROM measures the FMC: its CDI, and from it the FMC alias key.
        fmc_cdi = cdi(cdi(self._secret, b"ldevid"), bytes.fromhex(fmc.digest))
        fmc_key = _derive(fmc_cdi, f"fmc-alias/{label}", algorithm)
        fmc_alias = issue(
            subject=dice_name(f"{self.MODEL} FMC Alias", fmc_key.public_key()),
            public_key=fmc_key.public_key(),
            issuer=ldevid.subject,
            issuer_key=ldevid_key,
            ca=True,
            path_length=0,
            extensions=(self._tcb_info(fmc, 1),),
            authority_key=ldevid_key.public_key(),
        )
        # The FMC measures the runtime firmware: the runtime alias key.
        rt_key = _derive(
            cdi(fmc_cdi, bytes.fromhex(runtime.digest)), f"rt-alias/{label}", algorithm
        )
        rt_alias = issue(
            subject=dice_name(f"{self.MODEL} Runtime Alias", rt_key.public_key()),
            public_key=rt_key.public_key(),
            issuer=fmc_alias.subject,
            issuer_key=fmc_key,
            ca=False,
            extensions=(self._tcb_info(runtime, 2),),
            authority_key=fmc_key.public_key(),
        )
        return rt_key, (der(rt_alias), der(fmc_alias), der(ldevid))


class CerberusDevice(RotDevice):
    """Cerberus-like (RIoT): a DeviceID identity and one alias key for its firmware."""

    KIND = DeviceKind.CERBERUS
    MODEL = "Cerberus-like RoT"
    ALGORITHMS = (Algorithm.ES384,)

    __slots__ = ()

    @classmethod
    def identity_profile(cls, algorithm: Algorithm) -> IdentityProfile:
        return IdentityProfile(ca=True, path_length=0, key_usage="sign")

    def _identity_role(self) -> str:
        return "DeviceID"

    def _derive_aliases(
        self, algorithm: Algorithm, layer: _Layer
    ) -> tuple[PrivateKey, tuple[bytes, ...]]:
        assert layer.identity is not None
        (image,) = self._firmware
        key = _derive(cdi(self._secret, bytes.fromhex(image.digest)), "alias", algorithm)
        alias = issue(
            subject=dice_name(f"{self.MODEL} Alias", key.public_key()),
            public_key=key.public_key(),
            issuer=layer.identity.subject,
            issuer_key=layer.identity_key,
            ca=False,
            extensions=(self._tcb_info(image, 1),),
            authority_key=layer.identity_key.public_key(),
        )
        return key, (der(alias),)


#: TCG EK credential profile attributes (tcg-at-tpmManufacturer, -tpmModel, -tpmVersion).
_TPM_MANUFACTURER = x509.ObjectIdentifier("2.23.133.2.1")
_TPM_MODEL = x509.ObjectIdentifier("2.23.133.2.2")
_TPM_VERSION = x509.ObjectIdentifier("2.23.133.2.3")


class TpmDevice(RotDevice):
    """TPM-like: an endorsement key with an EK certificate; the EK signs the evidence."""

    KIND = DeviceKind.TPM
    MODEL = "TPM-like"
    ALGORITHMS = (Algorithm.ES256,)

    __slots__ = ()

    @classmethod
    def identity_profile(cls, algorithm: Algorithm) -> IdentityProfile:
        san = x509.SubjectAlternativeName(
            [
                x509.DirectoryName(
                    x509.Name(
                        [
                            x509.NameAttribute(_TPM_MANUFACTURER, "id:53494D00"),
                            x509.NameAttribute(_TPM_MODEL, cls.MODEL),
                            x509.NameAttribute(_TPM_VERSION, "id:00020000"),
                        ]
                    )
                )
            ]
        )
        return IdentityProfile(
            ca=False,
            path_length=None,
            key_usage="agree",
            extensions=((san, True),),
            empty_subject=True,
        )

    def _identity_role(self) -> str:
        return "EK"
