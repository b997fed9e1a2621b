"""The public log shows a hash of each signed statement, and that hash cannot be matched by
guessing the statement's payload, however few the possible payloads (docs/auth.md,
"Selective disclosure").

The log entry is SHA-256 of the whole COSE_Sign1, signature included, so a guess must
reproduce the issuer's signature: impossible without the issuer's private key, and with
ES256 (randomized ECDSA) not even the issuer can make the same bytes twice.
"""

from __future__ import annotations

import hashlib

from sealtrail.keys import ED25519, ES256, Signer, generate_signer
from sealtrail.scitt import sign_statement

ISSUER = "https://maker.example/signing"
PAYLOADS = [b'{"passed": true}', b'{"passed": false}'] + [b'{"score": %d}' % n for n in range(200)]


def _entry(statement: bytes) -> bytes:
    return hashlib.sha256(statement).digest()


def _sign(key: Signer, payload: bytes) -> bytes:
    return sign_statement(
        key,
        issuer=ISSUER,
        subject="urn:maker:device:7",
        content_type="application/json",
        payload=payload,
        issued_at=1_790_000_000,
    )


def test_a_low_entropy_payload_cannot_be_guessed_from_the_public_entry() -> None:
    issuer_key = generate_signer(ES256)
    secret = PAYLOADS[0]
    public_entry = _entry(_sign(issuer_key, secret))
    # Every possible payload, every header the attacker can know (issuer, subject, time),
    # signed with a key of its own: no candidate hashes to the entry.
    attacker = generate_signer(ES256)
    assert all(_entry(_sign(attacker, p)) != public_entry for p in PAYLOADS)
    # Not even the issuer's own key makes the same statement twice (randomized ECDSA).
    assert all(_entry(_sign(issuer_key, secret)) != public_entry for _ in range(20))


def test_with_a_deterministic_signature_only_the_key_holder_could_confirm_a_guess() -> None:
    issuer_key = generate_signer(ED25519)
    public_entry = _entry(_sign(issuer_key, PAYLOADS[0]))
    attacker = generate_signer(ED25519)
    assert all(_entry(_sign(attacker, p)) != public_entry for p in PAYLOADS)
    assert _entry(_sign(issuer_key, PAYLOADS[0])) == public_entry  # the issuer, and only it
