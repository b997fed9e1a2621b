"""The operator's own evidence verifier: what a data center checks before it records a
challenge or an attestation result.

It knows the device's identity certificate and the reference measurements of the firmware
releases the operator trusts. It checks that the alias chain leads to the identity key
(each certificate issued by the next, an alias that issues another a CA), that the
signature is over this nonce and these measurements, that the DICE ``DiceTcbInfo`` FWIDs in
the alias certificates are exactly the measurements the device reports, and that each
measurement is a released one. The ledger appraises the evidence again on its own: the
operator's word is never taken for it.
"""

from __future__ import annotations

import itertools
from collections.abc import Container, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

from ._dice import tcb_info_of
from ._evidence import Evidence, evidence_message, signature_verifies

__all__ = ["check_evidence"]


def check_evidence(
    identity: bytes,
    evidence: Evidence,
    nonce: bytes,
    *,
    released: Container[tuple[str, str, str]] | None = None,
) -> tuple[str, ...]:
    """What is wrong with ``evidence`` for the device of ``identity`` (DER), sorted; empty
    when it is good. ``released`` holds ``(component, alg, digest)`` of known firmware; with
    ``None`` the measurements are not compared with releases (an identity challenge).

    Reasons: ``evidence-bad-chain``, ``evidence-bad-signature``,
    ``evidence-tcb-mismatch`` (the alias certificates measured other firmware than the
    device reports) and ``measurement-unknown``.
    """
    chain = _chain(identity, evidence.chain)
    if chain is None:
        return ("evidence-bad-chain",)
    key, fwids = chain
    if not signature_verifies(
        key, evidence.signature, evidence_message(nonce, evidence.measurements)
    ):
        return ("evidence-bad-signature",)
    reasons = set()
    if evidence.chain and fwids != {(m.alg, m.digest) for m in evidence.measurements}:
        reasons.add("evidence-tcb-mismatch")
    if released is not None and any(
        (m.component, m.alg, m.digest) not in released for m in evidence.measurements
    ):
        reasons.add("measurement-unknown")
    return tuple(sorted(reasons))


def _chain(identity: bytes, aliases: Sequence[bytes]) -> tuple[object, set[tuple[str, str]]] | None:
    """The signing key and the FWIDs the alias certificates carry, if the chain leads to
    the identity (each certificate issued by the next; an alias that issues another a CA)."""
    try:
        certificates = [x509.load_der_x509_certificate(d) for d in (*aliases, identity)]
        for position, (child, issuer) in enumerate(itertools.pairwise(certificates)):
            if position + 1 < len(aliases) and not _is_ca(issuer):
                return None
            child.verify_directly_issued_by(issuer)
        fwids = set()
        for certificate in certificates[: len(aliases)]:
            info = tcb_info_of(certificate)
            if info is not None:
                fwids |= {(f.alg, f.digest.hex()) for f in info.fwids}
        return certificates[0].public_key(), fwids
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return None


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return bool(certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False
