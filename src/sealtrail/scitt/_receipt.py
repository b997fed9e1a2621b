"""COSE Receipts (RFC 9942) over the RFC9162_SHA256 verifiable data structure.

A receipt is a COSE_Sign1 made by the transparency service:

* protected: ``alg`` (1), ``kid`` (4, the service key's thumbprint), ``vds`` (395) = 1,
  CWT claims (15) ``iss`` (the service), ``sub`` (the log's origin), ``iat``, and the tree
  size (-65537, private use);
* unprotected: ``vdp`` (396) = ``{-1: [inclusion-proof]}``, where an inclusion proof is
  ``bstr .cbor [tree-size, leaf-index, [+ hash]]``;
* payload: the tree's root, **detached** — the verifier recomputes it from the leaf and
  the proof, and the signature only verifies over the right root.

RFC 9942 section 5.2 gives the inclusion path as ``[ + bstr ]``: a tree of one entry,
whose path is empty, has no receipt. The service issues none against such a tree (the
entry counts as not yet in the log until a second one follows); :func:`verify_receipt`
still accepts an empty path from others, as it accepts what the RFC only discourages:
an attached root (``SHOULD be detached``), checked against the one the proof leads to,
and several inclusion proofs, each of which must lead to the signed root.

The protected header is the same for every entry of one tree size, so the service signs a
root once and every receipt against that tree shares the signature (:class:`ReceiptSigner`).

RFC 9942 leaves the tree size and leaf index unsigned: the signature covers the root, and
a proof rewritten for another tree shape can reach the same root (the proof of leaf 2 of 3
reads as leaf 1 of 2). Sealtrail's receipts sign the size too, which binds the index with
it (at one size, each index has its own path shape); a receipt without it verifies, and
says its size is not signed (:attr:`ReceiptInfo.size_signed`).

A transparent statement is the signed statement with its receipts in the unprotected
header (label 394). Taking them out gives back the registered bytes exactly.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sealtrail.errors import InvalidInput, InvalidProof, InvalidSignature, VerificationError
from sealtrail.keys import Signer, Verifier
from sealtrail.merkle import MerkleError, leaf_hash, root_from_inclusion_proof

from . import _cbor
from ._cose import ALG_BY_NAME, Claim, CoseSign1, Header, decode_sign1, encode_sign1, sig_structure
from ._cosekey import key_id

__all__ = [
    "MIN_RECEIPT_TREE_SIZE",
    "VDS_RFC9162_SHA256",
    "ReceiptInfo",
    "ReceiptSigner",
    "add_receipts",
    "split_transparent",
    "verify_receipt",
]

VDS_RFC9162_SHA256 = 1
VDP_INCLUSION = -1
#: Receipts kept in one transparent statement, at most.
MAX_RECEIPTS = 16
#: Longest inclusion path accepted (a tree of 2**64 leaves).
MAX_PATH = 64
#: Most inclusion proofs read from one receipt (RFC 9942 sets no bound; each costs a
#: path's worth of hashing, and one root signature covers them all).
MAX_PROOFS = 16
#: The smallest tree the service issues a receipt against: RFC 9942 section 5.2's
#: ``inclusion-path: [ + bstr ]`` has no empty path, which is all a one-entry tree has.
MIN_RECEIPT_TREE_SIZE = 2


@dataclass(frozen=True)
class ReceiptInfo:
    """What a verified receipt says."""

    tree_size: int
    leaf_index: int
    root: bytes
    issuer: str | None
    subject: str | None
    issued_at: int | None
    kid: bytes
    #: Whether the signature covers ``tree_size`` (and so ``leaf_index``): Sealtrail's
    #: receipts do; another service's may not, and then both are only as the proof says.
    size_signed: bool = False
    #: The leaf index of every inclusion proof the receipt carries, in order (RFC 9942
    #: allows several; each led to the signed root). ``leaf_index`` is the first.
    leaf_indexes: tuple[int, ...] = ()


class ReceiptSigner:
    """Issues receipts with the service key; one root signature per tree size."""

    def __init__(self, signer: Signer, *, issuer: str, subject: str, cache: int = 64) -> None:
        self.signer = signer
        self.kid = key_id(signer.verifier())
        self.issuer = issuer
        self.subject = subject
        self._cache: OrderedDict[tuple[int, bytes], tuple[bytes, bytes]] = OrderedDict()
        self._size = cache
        self._lock = threading.Lock()

    def _signed_root(self, tree_size: int, root: bytes) -> tuple[bytes, bytes]:
        key = (tree_size, root)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        protected = _cbor.dumps(
            {
                Header.ALG: ALG_BY_NAME[self.signer.algorithm],
                Header.KID: self.kid,
                Header.VDS: VDS_RFC9162_SHA256,
                Header.TREE_SIZE: tree_size,
                Header.CWT_CLAIMS: {
                    Claim.ISS: self.issuer,
                    Claim.SUB: self.subject,
                    Claim.IAT: int(time.time()),
                },
            }
        )
        signed = (protected, self.signer.sign(sig_structure(protected, root)))
        with self._lock:
            self._cache[key] = signed
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return signed

    def receipt(
        self, *, tree_size: int, leaf_index: int, path: Sequence[bytes], root: bytes
    ) -> bytes:
        """A receipt for the leaf at ``leaf_index`` of the tree of ``tree_size`` (root ``root``).

        Refuses a tree of fewer than :data:`MIN_RECEIPT_TREE_SIZE` entries (``InvalidInput``,
        ``receipt-tree-too-small``): its inclusion path would be empty, which RFC 9942's
        ``[ + bstr ]`` does not allow.
        """
        if tree_size < MIN_RECEIPT_TREE_SIZE:
            raise InvalidInput(
                f"no receipt against a tree of {tree_size} entries: RFC 9942 requires a "
                "non-empty inclusion path",
                code="receipt-tree-too-small",
            )
        protected, signature = self._signed_root(tree_size, root)
        proof = _cbor.dumps([tree_size, leaf_index, list(path)])
        return encode_sign1(protected, {Header.VDP: {VDP_INCLUSION: [proof]}}, None, signature)


def _fail(code: str, message: str) -> VerificationError:
    return VerificationError(
        message, code=code, hint="Do not trust this receipt for this statement."
    )


def _decode_receipt(receipt: bytes) -> CoseSign1:
    try:
        message = decode_sign1(receipt)
    except (InvalidInput, InvalidSignature) as exc:
        raise _fail(
            "receipt-malformed", f"the receipt is not a COSE_Sign1: {exc.message}"
        ) from None
    vds = message.protected.get(Header.VDS)
    if vds != VDS_RFC9162_SHA256:
        raise _fail(
            "receipt-unsupported-vds",
            f"verifiable data structure {vds!r} is not RFC9162_SHA256 (1)",
        )
    return message


def _proofs(message: CoseSign1) -> list[tuple[int, int, list[bytes]]]:
    """The receipt's inclusion proofs, each ``(tree size, leaf index, path)``."""
    vdp = message.unprotected.get(Header.VDP)
    proofs = vdp.get(VDP_INCLUSION) if isinstance(vdp, dict) else None
    if (
        not isinstance(proofs, list)
        or not 1 <= len(proofs) <= MAX_PROOFS
        or not all(isinstance(p, bytes) for p in proofs)
    ):
        raise _fail(
            "receipt-malformed",
            f"the receipt must carry 1..{MAX_PROOFS} inclusion proofs (byte strings)",
        )
    return [_proof(proof) for proof in proofs]


def _proof(encoded: bytes) -> tuple[int, int, list[bytes]]:
    try:
        decoded = _cbor.loads(encoded)
    except InvalidInput as exc:
        raise _fail("receipt-malformed", f"inclusion proof: {exc.message}") from None
    if (
        not isinstance(decoded, list)
        or len(decoded) != 3
        or not all(type(v) is int and v >= 0 for v in decoded[:2])
        or not isinstance(decoded[2], list)
        or len(decoded[2]) > MAX_PATH
        or not all(isinstance(h, bytes) for h in decoded[2])
    ):
        raise _fail("receipt-malformed", "an inclusion proof is [tree-size, leaf-index, [hashes]]")
    return decoded[0], decoded[1], decoded[2]


def _verifier(message: CoseSign1, keys: Mapping[bytes, Verifier]) -> Verifier:
    kid = message.protected.get(Header.KID)
    if isinstance(kid, str):
        # RFC 9052 section 3.1 makes kid a bstr; RFC 9942's and SCRAPI's examples show text.
        # A text kid is not matched to a byte-string kid of the same UTF-8 bytes: a key set
        # names keys by bstr, and no rule says which text a bstr kid is.
        raise _fail(
            "receipt-unknown-key",
            "the receipt's kid is a text string; a COSE kid is a byte string "
            "(RFC 9052 section 3.1), so no key in the key set matches it",
        )
    verifier = keys.get(kid) if isinstance(kid, bytes) else None
    if verifier is None and kid is None and keys:
        # A receipt without kid, and one key to try (found under one kid or two).
        first, *others = keys.values()
        verifier = first if all(other == first for other in others) else None
    if verifier is None:
        raise _fail("receipt-unknown-key", "the receipt is signed by a key not in the key set")
    return verifier


def verify_receipt(
    receipt: bytes, *, leaf_entry: bytes, keys: Mapping[bytes, Verifier]
) -> ReceiptInfo:
    """Check that ``receipt`` proves ``leaf_entry`` is in the service's log.

    ``keys`` maps key ids to the service's public keys (current and retired). Every
    inclusion proof the receipt carries must lead from the leaf to one root, the root the
    signature covers (and an attached payload, which RFC 9942 says SHOULD be detached, must
    be that root). Raises :class:`~sealtrail.errors.VerificationError` with a code naming
    what failed: ``receipt-malformed``, ``receipt-unsupported-vds``, ``receipt-unknown-key``,
    ``receipt-bad-proof`` or ``receipt-bad-signature``.
    """
    message = _decode_receipt(receipt)
    verifier = _verifier(message, keys)
    proofs = _proofs(message)
    signed_size = message.protected.get(Header.TREE_SIZE)
    entry_leaf = leaf_hash(leaf_entry)
    roots = []
    for number, (size, index, path) in enumerate(proofs, start=1):
        which = "" if len(proofs) == 1 else f" {number}"
        if signed_size is not None and (type(signed_size) is not int or signed_size != size):
            raise _fail(
                "receipt-bad-proof",
                f"the receipt's proof{which} is for a tree of {size} entries, "
                f"its signature for one of {signed_size!r}",
            )
        try:
            roots.append(
                root_from_inclusion_proof(leaf_hash=entry_leaf, index=index, size=size, proof=path)
            )
        except MerkleError as exc:
            raise InvalidProof(
                f"the receipt's inclusion proof{which} is malformed: {exc}",
                code="receipt-bad-proof",
            ) from None
    root = roots[0]
    if any(other != root for other in roots[1:]):
        # One signature covers one root: proofs that part ways cannot all be right.
        raise InvalidSignature(
            "the receipt's inclusion proofs lead to different roots (proof, leaf or "
            "signature altered)",
            code="receipt-bad-signature",
        )
    if message.payload is not None and message.payload != root:
        raise InvalidProof(
            "the receipt's attached root is not the root its inclusion proof leads to "
            "(proof or leaf altered, or a receipt for another entry)",
            code="receipt-bad-proof",
        )
    try:
        message.verify(verifier, payload=root)
    except InvalidSignature:
        # The proof and the signature cannot be told apart here: a changed path yields
        # another root, and the signature then fails over it.
        raise InvalidSignature(
            "the receipt's signature does not verify over the root its proof implies "
            "(proof, leaf or signature altered)",
            code="receipt-bad-signature",
        ) from None
    kid = message.protected.get(Header.KID)
    claims = message.protected.get(Header.CWT_CLAIMS)
    claims = claims if isinstance(claims, dict) else {}
    size, index, _ = proofs[0]
    return ReceiptInfo(
        tree_size=size,
        leaf_index=index,
        root=root,
        issuer=_opt_text(claims.get(Claim.ISS)),
        subject=_opt_text(claims.get(Claim.SUB)),
        issued_at=claims.get(Claim.IAT) if isinstance(claims.get(Claim.IAT), int) else None,
        kid=kid if isinstance(kid, bytes) else b"",
        size_signed=signed_size is not None,
        leaf_indexes=tuple(i for _, i, _ in proofs),
    )


def _opt_text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def add_receipts(statement: bytes, receipts: Sequence[bytes]) -> bytes:
    """The transparent statement: ``statement`` with ``receipts`` in its unprotected header."""
    message = decode_sign1(statement)
    if len(receipts) > MAX_RECEIPTS:
        raise InvalidInput(f"at most {MAX_RECEIPTS} receipts per statement")
    unprotected = {k: v for k, v in message.unprotected.items() if k != Header.RECEIPTS}
    unprotected[Header.RECEIPTS] = list(receipts)
    return encode_sign1(message.protected_bytes, unprotected, message.payload, message.signature)


def split_transparent(transparent: bytes) -> tuple[bytes, list[bytes]]:
    """The registered statement bytes and the receipts of a transparent statement."""
    message = decode_sign1(transparent)
    receipts = message.unprotected.get(Header.RECEIPTS, [])
    if (
        not isinstance(receipts, list)
        or len(receipts) > MAX_RECEIPTS
        or not all(isinstance(r, bytes) for r in receipts)
    ):
        raise InvalidInput(
            f"label 394 must hold an array of at most {MAX_RECEIPTS} receipts",
            code="receipt-malformed",
        )
    rest = {k: v for k, v in message.unprotected.items() if k != Header.RECEIPTS}
    statement = encode_sign1(message.protected_bytes, rest, message.payload, message.signature)
    return statement, receipts
