"""PKCS#11 HSM keys: the private key stays on the token, Sealtrail asks it to sign.

Built on ``python-pkcs11``, an optional dependency imported on first use, so
``sealtrail.keys`` imports without it. Supported keys: ECDSA P-256 (ES256), P-384 (ES384)
and Ed25519 (where the token offers ``CKM_EDDSA``).

ECDSA is asked of the token as plain ``CKM_ECDSA`` over a digest computed here: SoftHSM 2.6
offers no ``CKM_ECDSA_SHA256`` / ``CKM_ECDSA_SHA384``, and every token that does ECDSA offers
``CKM_ECDSA``. The token's ECDSA output is already the raw ``r || s`` form COSE wants.

PKCS#11 logins belong to the process, not to a session: the first signer on a token logs in,
later ones on the same token share that login (their PIN is still checked, against a salted
hash kept while the login lasts), and the token is logged out when the last one closes.
The PIN itself is never stored, logged, or put in a ``repr`` or an error message.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import os
import secrets
import sys
import sysconfig
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sealtrail.errors import ConfigError, InvalidInput, InvalidSignature
from sealtrail.keys._protocols import ED25519, ES256, ES384
from sealtrail.keys._select import public_key_object, verifier_from_bytes

if TYPE_CHECKING:
    from types import TracebackType

    from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes
    from pkcs11 import Mechanism, Session, SignMixin, Token
    from pkcs11._pkcs11 import lib as Pkcs11Library

    from sealtrail.keys._protocols import Verifier

__all__ = [
    "PKCS11_ALGORITHMS",
    "PKCS11_MODULE_ENV",
    "Pkcs11Signer",
    "find_pkcs11_module",
    "pkcs11_supported",
]

PKCS11_MODULE_ENV = "SEALTRAIL_PKCS11_MODULE"
"""Environment variable naming the PKCS#11 module (the vendor's ``.so``) to use."""

PKCS11_ALGORITHMS: tuple[str, ...] = (ES256, ES384, ED25519)
"""The algorithms a :class:`Pkcs11Signer` can sign with."""

_INSTALL_HINT = "Install the optional dependency: pip install 'sealtrail[hsm]' (python-pkcs11)."
_MODULE_HINT = (
    f"Pass the path of your HSM vendor's PKCS#11 library or set {PKCS11_MODULE_ENV}; for "
    "SoftHSM2 install its package (Debian: softhsm2)."
)
_PIN_HINT = (
    "Check where the PIN comes from (environment variable or PIN file). Repeated wrong PINs "
    "lock the token."
)

# DER ``ECParameters`` of the curves we sign with: a named-curve OID (RFC 5480), or for
# Ed25519 also the PrintableString "edwards25519" that PKCS#11 3.0 allows.
_P256_PARAMS = bytes.fromhex("06082a8648ce3d030107")  # prime256v1, 1.2.840.10045.3.1.7
_P384_PARAMS = bytes.fromhex("06052b81040022")  # secp384r1, 1.3.132.0.34
_ED25519_PARAMS = bytes.fromhex("06032b6570")  # id-Ed25519, 1.3.101.112
_EC_PARAMS = {_P256_PARAMS: ES256, _P384_PARAMS: ES384}
_EDWARDS_PARAMS = {_ED25519_PARAMS: ED25519, b"\x13\x0cedwards25519": ED25519}
_PARAMS_FOR = {ES256: _P256_PARAMS, ES384: _P384_PARAMS, ED25519: _ED25519_PARAMS}
#: Raw public key size per algorithm: 04 || x || y for ECDSA, 32 bytes for Ed25519.
_POINT_SIZE = {ES256: 65, ES384: 97, ED25519: 32}
_SIGNATURE_SIZE = {ES256: 64, ES384: 96, ED25519: 64}
_DIGEST = {ES256: hashlib.sha256, ES384: hashlib.sha384}

#: PIN hashing for shared logins: only to compare a later signer's PIN with the first one's.
_PIN_HASH_ITERATIONS = 100_000


def _softhsm2_places() -> list[Path]:
    """Where distributions put SoftHSM2's PKCS#11 module."""
    places = [Path("/usr/lib/softhsm/libsofthsm2.so")]  # Debian, Ubuntu
    multiarch = sysconfig.get_config_var("MULTIARCH")
    if isinstance(multiarch, str) and multiarch:
        places.append(Path("/usr/lib") / multiarch / "softhsm" / "libsofthsm2.so")
    places += [
        Path("/usr/lib64/pkcs11/libsofthsm2.so"),  # Fedora, RHEL
        Path("/usr/lib64/softhsm/libsofthsm2.so"),  # openSUSE
        Path("/usr/local/lib/softhsm/libsofthsm2.so"),  # built from source, FreeBSD ports
    ]
    if sys.platform == "darwin":
        places += [
            Path("/opt/homebrew/lib/softhsm/libsofthsm2.so"),
            Path("/usr/local/opt/softhsm/lib/softhsm/libsofthsm2.so"),
        ]
    return places


def find_pkcs11_module() -> Path | None:
    """The PKCS#11 module to use when none is given.

    ``$SEALTRAIL_PKCS11_MODULE`` if set (even if nothing is there: opening it then says so),
    else SoftHSM2's module in one of its standard places, else ``None``.
    """
    configured = os.environ.get(PKCS11_MODULE_ENV)
    if configured:
        return Path(configured)
    return next((place for place in _softhsm2_places() if place.is_file()), None)


@functools.cache
def pkcs11_supported() -> bool:
    """Whether the optional ``python-pkcs11`` package is installed and loads."""
    try:
        import pkcs11  # noqa: F401, PLC0415 - optional dependency, probed on demand
    except ImportError:
        return False
    return True


def _require_pkcs11() -> None:
    if not pkcs11_supported():
        raise ConfigError("PKCS#11 keys need the python-pkcs11 package", hint=_INSTALL_HINT)


def _load_module(module: str | os.PathLike[str]) -> tuple[str, Pkcs11Library]:
    _require_pkcs11()
    import pkcs11  # noqa: PLC0415 - optional dependency, loaded on first use

    path = Path(module)
    if not path.is_file():
        raise ConfigError(f"PKCS#11 module not found: {path}", hint=_MODULE_HINT)
    so = str(path)
    try:
        # One library object per path and process; C_Initialize runs on first use.
        return so, pkcs11.lib(so)
    except pkcs11.PKCS11Error as exc:
        # The text is the dynamic loader's (path and reason), or an error class name.
        raise ConfigError(
            f"cannot load PKCS#11 module {path}: {exc or type(exc).__name__}",
            hint="For SoftHSM2, check SOFTHSM2_CONF and that its token directory exists.",
        ) from None


def _find_token(lib: Pkcs11Library, label: str, so: str) -> Token:
    import pkcs11  # noqa: PLC0415 - optional dependency, loaded on first use

    try:
        return lib.get_token(token_label=label)
    except pkcs11.NoSuchToken:
        pass
    except pkcs11.MultipleTokensReturned:
        raise ConfigError(f"several PKCS#11 tokens are labelled {label!r} in {so}") from None
    except pkcs11.PKCS11Error as exc:
        raise ConfigError(f"cannot list the tokens of {so}: {type(exc).__name__}") from None
    try:
        present = sorted(t.label for t in lib.get_tokens() if t.label)
    except pkcs11.PKCS11Error:
        present = []
    raise ConfigError(
        f"no PKCS#11 token labelled {label!r} in {so}",
        hint=(f"Tokens present: {', '.join(present)}." if present else "No token is present.")
        + " For SoftHSM2: softhsm2-util --show-slots.",
    )


# --- shared logins ---------------------------------------------------------------------------


@dataclass
class _Login:
    session: Session | None  # opened with the PIN; closing it logs the token out. None: not ours
    users: int
    salt: bytes
    pin_hash: bytes


_logins: dict[tuple[str, int, bytes], _Login] = {}
_logins_lock = threading.Lock()


def _hash_pin(pin: str, salt: bytes) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", pin.encode("utf-8"), salt, _PIN_HASH_ITERATIONS)


def _acquire_login(so: str, token: Token, pin: str) -> tuple[str, int, bytes]:
    """Log in to ``token`` as the user, or join this process's existing login after checking
    ``pin`` against it. Returns the key to pass to :func:`_release_login`."""
    import pkcs11  # noqa: PLC0415 - optional dependency, loaded on first use

    key = (so, token.slot.slot_id, token.serial)
    with _logins_lock:
        login = _logins.get(key)
        if login is not None:
            if not hmac.compare_digest(_hash_pin(pin, login.salt), login.pin_hash):
                raise ConfigError(f"PKCS#11 token {token.label!r} rejected the PIN", hint=_PIN_HINT)
            login.users += 1
            return key
        session: Session | None
        try:
            session = token.open(user_pin=pin)
        except pkcs11.UserAlreadyLoggedIn:
            # Something else in this process logged in; share it and never log it out.
            session = None
        except (pkcs11.PinIncorrect, pkcs11.PinInvalid, pkcs11.PinLenRange):
            raise ConfigError(
                f"PKCS#11 token {token.label!r} rejected the PIN", hint=_PIN_HINT
            ) from None
        except (pkcs11.PinLocked, pkcs11.PinExpired) as exc:
            state = "locked" if isinstance(exc, pkcs11.PinLocked) else "expired"
            raise ConfigError(
                f"the user PIN of PKCS#11 token {token.label!r} is {state}",
                hint="The token's security officer must reset it.",
            ) from None
        except pkcs11.UserPinNotInitialized:
            raise ConfigError(
                f"PKCS#11 token {token.label!r} has no user PIN yet",
                hint="Initialize the token (softhsm2-util --init-token for SoftHSM2).",
            ) from None
        except pkcs11.PKCS11Error as exc:
            raise ConfigError(
                f"cannot log in to PKCS#11 token {token.label!r}: {type(exc).__name__}"
            ) from None
        salt = secrets.token_bytes(16)
        _logins[key] = _Login(session, 1, salt, _hash_pin(pin, salt))
        return key


def _release_login(key: tuple[str, int, bytes]) -> None:
    with _logins_lock:
        login = _logins.get(key)
        if login is None:
            return
        login.users -= 1
        if login.users > 0:
            return
        del _logins[key]
        _close_quietly(login.session)  # logs the token out for this process


def _close_quietly(session: Session | None) -> None:
    import pkcs11  # noqa: PLC0415 - optional dependency, loaded on first use

    if session is not None:
        # If the module was finalized or the token removed, there is nothing left to close.
        with contextlib.suppress(pkcs11.PKCS11Error):
            session.close()


# --- key lookup ------------------------------------------------------------------------------


def _key_description(label: str | None, key_id: bytes | None) -> str:
    parts = []
    if label is not None:
        parts.append(f"labelled {label!r}")
    if key_id is not None:
        parts.append(f"with id {key_id.hex()}")
    return " and ".join(parts)


def _find_private_key(
    session: Session, token_label: str, label: str | None, key_id: bytes | None
) -> SignMixin:
    import pkcs11  # noqa: PLC0415 - optional dependency, loaded on first use
    from pkcs11 import Attribute, ObjectClass  # noqa: PLC0415

    query: dict[Attribute, object] = {Attribute.CLASS: ObjectClass.PRIVATE_KEY}
    if label is not None:
        query[Attribute.LABEL] = label
    if key_id is not None:
        query[Attribute.ID] = key_id
    what = _key_description(label, key_id)
    found = list(session.get_objects(query))
    if not found:
        raise ConfigError(
            f"no private key {what} on PKCS#11 token {token_label!r}",
            hint="Check the key label or id (OpenSC's pkcs11-tool --list-objects shows a "
            "token's objects), or create the key with Pkcs11Signer.generate.",
        )
    if len(found) > 1:
        raise ConfigError(
            f"{len(found)} private keys {what} on PKCS#11 token {token_label!r}",
            hint="Select one by key id as well.",
        )
    key = found[0]
    if not isinstance(key, pkcs11.PrivateKey):
        raise ConfigError(f"the object {what} on token {token_label!r} is not a private key")
    if not isinstance(key, pkcs11.SignMixin):
        raise ConfigError(
            f"the private key {what} on PKCS#11 token {token_label!r} may not sign (CKA_SIGN)"
        )
    return key


def _algorithm_of(key: SignMixin, token_label: str, what: str) -> str:
    from pkcs11 import Attribute, KeyType  # noqa: PLC0415

    key_type = key.key_type
    if key_type == KeyType.EC:
        algorithm = _EC_PARAMS.get(bytes(key[Attribute.EC_PARAMS]))
        kind = "an ECDSA key on a curve other than P-256 or P-384"
    elif key_type == KeyType.EC_EDWARDS:
        algorithm = _EDWARDS_PARAMS.get(bytes(key[Attribute.EC_PARAMS]))
        kind = "an Edwards-curve key other than Ed25519"
    else:
        algorithm, kind = None, f"a key of type {getattr(key_type, 'name', key_type)}"
    if algorithm is None:
        raise ConfigError(
            f"the key {what} on PKCS#11 token {token_label!r} is {kind}; "
            f"Sealtrail signs with {', '.join(PKCS11_ALGORITHMS)} keys on a token",
        )
    return algorithm


def _find_public_key(
    session: Session, private: SignMixin, token_label: str, label: str | None, what: str
) -> bytes:
    """CKA_EC_POINT of the public key object paired with ``private``: the one with the same
    CKA_ID and label, else the only one with the same CKA_ID, else (for a pair without an
    id) the only one with the same label. The self-test in ``Pkcs11Signer`` then checks it."""
    from pkcs11 import Attribute, ObjectClass  # noqa: PLC0415

    public: dict[Attribute, object] = {Attribute.CLASS: ObjectClass.PUBLIC_KEY}
    pair_id = bytes(private[Attribute.ID] or b"")
    queries: list[dict[Attribute, object]] = []
    if pair_id and label is not None:
        queries.append({**public, Attribute.ID: pair_id, Attribute.LABEL: label})
    if pair_id:
        queries.append({**public, Attribute.ID: pair_id})
    elif label is not None:
        queries.append({**public, Attribute.LABEL: label})
    for query in queries:
        found = list(session.get_objects(query))
        if len(found) == 1:
            return bytes(found[0][Attribute.EC_POINT])
        if len(found) > 1:
            raise ConfigError(
                f"PKCS#11 token {token_label!r} has {len(found)} public key objects that could "
                f"pair with the private key {what}",
                hint="Give each key pair its own CKA_ID (shared by its two objects).",
            )
    raise ConfigError(
        f"PKCS#11 token {token_label!r} has no public key object for the private key {what}; "
        "Sealtrail reads the public key from the token",
        hint="Store the public key on the token with the same CKA_ID as its private key.",
    )


def _raw_point(ec_point: bytes, algorithm: str, token_label: str) -> bytes:
    """CKA_EC_POINT is a DER OCTET STRING holding the point; some tokens give it bare."""
    size = _POINT_SIZE[algorithm]
    if len(ec_point) == size:
        return ec_point
    if len(ec_point) == size + 2 and ec_point[0] == 0x04 and ec_point[1] == size:
        return ec_point[2:]
    raise ConfigError(f"PKCS#11 token {token_label!r} returned a malformed public key")


def _mechanism_for(algorithm: str) -> Mechanism:
    from pkcs11 import Mechanism  # noqa: PLC0415

    return Mechanism.EDDSA if algorithm == ED25519 else Mechanism.ECDSA


def _require_mechanism(token: Token, mechanism: Mechanism, purpose: str) -> None:
    import pkcs11  # noqa: PLC0415 - optional dependency, loaded on first use

    try:
        offered = token.slot.get_mechanisms()
    except pkcs11.PKCS11Error as exc:
        raise ConfigError(
            f"cannot list the mechanisms of PKCS#11 token {token.label!r}: {type(exc).__name__}"
        ) from None
    if mechanism not in offered:
        raise ConfigError(
            f"PKCS#11 token {token.label!r} does not offer CKM_{mechanism.name}, "
            f"needed for {purpose}",
            hint="Use a key type the token supports (ES256 and ES384 need CKM_ECDSA, "
            "Ed25519 needs CKM_EDDSA).",
        )


# --- the signer ------------------------------------------------------------------------------


class Pkcs11Signer:
    """A private key on a PKCS#11 token (a :class:`~sealtrail.keys.Signer`).

    Opening it loads ``module`` (the vendor's PKCS#11 library, e.g. SoftHSM2's
    ``libsofthsm2.so``), finds the token labelled ``token_label``, logs in with ``pin``, finds
    the private key by ``key_label`` and/or ``key_id`` and its public key object, and signs a
    random probe to check that the two belong together. Every failure is a
    :class:`~sealtrail.errors.ConfigError` that names what was not found and never the PIN.

    ``pin`` is a value the caller read from an environment variable or a file
    (:func:`~sealtrail.keys.read_pin`); it is used to log in and then dropped. The private
    key never leaves the token; this object holds a session handle and the public key.

    Thread-safe: signatures are made one at a time on this signer's session. Close it
    (or use it as a context manager) when done; the token is logged out when the last
    signer on it closes.
    """

    __slots__ = (
        "_algorithm",
        "_key_label",
        "_lock",
        "_login",
        "_mechanism",
        "_private",
        "_session",
        "_token_label",
        "_verifier",
    )

    def __init__(
        self,
        *,
        module: str | os.PathLike[str],
        token_label: str,
        pin: str,
        key_label: str | None = None,
        key_id: bytes | None = None,
    ) -> None:
        if key_label is None and key_id is None:
            raise InvalidInput("a PKCS#11 key is selected by key_label, key_id or both")
        if not isinstance(pin, str) or not pin:
            raise InvalidInput("the PKCS#11 PIN must be a non-empty string")
        # No session means closed (or not open yet): sign() refuses, repr() says so.
        self._session: Session | None = None
        self._lock = threading.Lock()
        self._token_label = token_label
        self._key_label = key_label
        so, lib = _load_module(module)
        token = _find_token(lib, token_label, so)
        self._login = _acquire_login(so, token, pin)
        del pin  # not kept: a later login is another signer's, with its own PIN
        try:
            self._open(token, key_label, key_id)
        except BaseException:
            _close_quietly(self._detach_session())
            _release_login(self._login)
            raise

    def _open(self, token: Token, key_label: str | None, key_id: bytes | None) -> None:
        import pkcs11  # noqa: PLC0415 - optional dependency, loaded on first use

        label = token.label
        what = _key_description(key_label, key_id)
        try:
            # A session without a PIN of its own: it shares the process's login, and
            # closing it never logs the token out under another signer.
            self._session = token.open()
            self._private = _find_private_key(self._session, label, key_label, key_id)
            self._algorithm = _algorithm_of(self._private, label, what)
            ec_point = _find_public_key(self._session, self._private, label, key_label, what)
        except pkcs11.PKCS11Error as exc:
            raise ConfigError(
                f"cannot read the key {what} on PKCS#11 token {label!r}: {type(exc).__name__}"
            ) from None
        self._mechanism = _mechanism_for(self._algorithm)
        _require_mechanism(token, self._mechanism, f"{self._algorithm} signatures")
        raw = _raw_point(ec_point, self._algorithm, label)
        try:
            self._verifier = verifier_from_bytes(self._algorithm, raw)
        except InvalidInput:
            raise ConfigError(f"PKCS#11 token {label!r} returned an invalid public key") from None
        probe = b"sealtrail PKCS#11 key check " + secrets.token_bytes(16)
        try:
            self._verifier.verify(signature=self._sign(probe), message=probe)
        except InvalidSignature:
            raise ConfigError(
                f"the private and public key objects {what} on PKCS#11 token {label!r} "
                "do not belong together",
                hint="Give each key pair its own CKA_ID and label.",
            ) from None

    @classmethod
    def generate(
        cls,
        *,
        module: str | os.PathLike[str],
        token_label: str,
        pin: str,
        key_label: str,
        algorithm: str = ES256,
        key_id: bytes | None = None,
    ) -> Pkcs11Signer:
        """Create a key pair on the token and return a signer for it.

        The private key is generated on the token as sensitive and non-extractable, for
        signing only; it can never be read out, not even by the token's security officer.
        ``key_id`` (CKA_ID, shared by the pair) defaults to 16 random bytes. An existing
        object with the same label or id is never replaced: that is a
        :class:`~sealtrail.errors.ConfigError`, like an existing key file.
        """
        if algorithm not in PKCS11_ALGORITHMS:
            raise ConfigError(
                f"cannot create a {algorithm} key on a PKCS#11 token; "
                f"supported there: {', '.join(PKCS11_ALGORITHMS)}"
            )
        if not isinstance(pin, str) or not pin:
            raise InvalidInput("the PKCS#11 PIN must be a non-empty string")
        _require_pkcs11()
        import pkcs11  # noqa: PLC0415 - optional dependency, loaded on first use
        from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag  # noqa: PLC0415

        pair_id = key_id if key_id is not None else secrets.token_bytes(16)
        so, lib = _load_module(module)
        token = _find_token(lib, token_label, so)
        edwards = algorithm == ED25519
        generation = Mechanism.EC_EDWARDS_KEY_PAIR_GEN if edwards else Mechanism.EC_KEY_PAIR_GEN
        login = _acquire_login(so, token, pin)
        try:
            _require_mechanism(token, generation, f"creating {algorithm} keys")
            _require_mechanism(token, _mechanism_for(algorithm), f"{algorithm} signatures")
            try:
                with token.open(rw=True) as session:
                    for attribute, value, name in (
                        (Attribute.LABEL, key_label, f"labelled {key_label!r}"),
                        (Attribute.ID, pair_id, f"with id {pair_id.hex()}"),
                    ):
                        if next(iter(session.get_objects({attribute: value})), None) is not None:
                            raise ConfigError(
                                f"PKCS#11 token {token_label!r} already holds an object {name}; "
                                "refusing to create another key with it",
                                hint="Choose another key label, or delete the old key first "
                                "if you really mean to replace it.",
                            )
                    session.generate_keypair(
                        KeyType.EC_EDWARDS if edwards else KeyType.EC,
                        store=True,
                        label=key_label,
                        id=pair_id,
                        capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                        mechanism=generation,
                        public_template={
                            Attribute.EC_PARAMS: _PARAMS_FOR[algorithm],
                            Attribute.TOKEN: True,
                            Attribute.VERIFY: True,
                        },
                        private_template={
                            Attribute.TOKEN: True,
                            Attribute.PRIVATE: True,
                            Attribute.SENSITIVE: True,
                            Attribute.EXTRACTABLE: False,
                            Attribute.SIGN: True,
                            Attribute.DERIVE: False,
                            Attribute.DECRYPT: False,
                            Attribute.UNWRAP: False,
                        },
                    )
            except pkcs11.PKCS11Error as exc:
                raise ConfigError(
                    f"cannot create a {algorithm} key on PKCS#11 token {token_label!r}: "
                    f"{type(exc).__name__}"
                ) from None
            # If we crash here the key pair exists on the token: opening it by label works.
            return cls(
                module=module, token_label=token_label, pin=pin, key_label=key_label, key_id=pair_id
            )
        finally:
            _release_login(login)

    @property
    def algorithm(self) -> str:
        return self._algorithm

    @property
    def token_label(self) -> str:
        return self._token_label

    def public_key_bytes(self) -> bytes:
        return self._verifier.public_key_bytes()

    def public_key(self) -> CertificateIssuerPublicKeyTypes:
        return public_key_object(self._verifier)

    def verifier(self) -> Verifier:
        """The matching public key, as read from the token."""
        return self._verifier

    def sign(self, message: bytes) -> bytes:
        return self._sign(message)

    def _sign(self, message: bytes) -> bytes:
        import pkcs11  # noqa: PLC0415 - optional dependency, loaded on first use

        digest = _DIGEST.get(self._algorithm)
        data = digest(message).digest() if digest is not None else message
        try:
            with self._lock:
                if self._session is None:
                    raise ConfigError(
                        f"the PKCS#11 signer for token {self._token_label!r} is closed"
                    )
                signature = bytes(self._private.sign(data, mechanism=self._mechanism))
        except pkcs11.PKCS11Error as exc:
            raise ConfigError(
                f"PKCS#11 token {self._token_label!r} could not sign: {type(exc).__name__}",
                hint="Check that the HSM is reachable; reopen the signer if its session was lost.",
            ) from None
        if len(signature) != _SIGNATURE_SIZE[self._algorithm]:
            raise ConfigError(
                f"PKCS#11 token {self._token_label!r} returned a {len(signature)}-byte "
                f"{self._algorithm} signature, expected {_SIGNATURE_SIZE[self._algorithm]}"
            )
        return signature

    def close(self) -> None:
        """Close this signer's session; the last signer on a token also logs it out.

        Idempotent. A signature in progress on another thread finishes first.
        """
        session = self._detach_session()
        if session is not None:
            _close_quietly(session)
            _release_login(self._login)

    def _detach_session(self) -> Session | None:
        with self._lock:
            session, self._session = self._session, None
        return session

    def __enter__(self) -> Pkcs11Signer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        key = f"key_label={self._key_label!r}" if self._key_label is not None else "key_id=..."
        public = getattr(self, "_verifier", None)
        shown = public.public_key_bytes().hex() if public is not None else "?"
        state = ", closed" if self._session is None else ""
        return (
            f"Pkcs11Signer(algorithm={getattr(self, '_algorithm', '?')}, "
            f"token={self._token_label!r}, {key}, public_key={shown}{state})"
        )

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a Pkcs11Signer holds an HSM session and cannot be pickled")
