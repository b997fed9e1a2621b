"""Signed notes, cosignatures and checkpoints: properties, format rules, limits.

Expected bytes are built independently in this file with ``cryptography``'s Ed25519 and
``hashlib``, following C2SP signed-note and tlog-cosignature, not with sealtrail's helpers.
"""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from sealtrail.errors import (
    InvalidInput,
    InvalidSignature,
    MalformedNote,
    TooLarge,
    VerificationError,
)
from sealtrail.keys import Ed25519Signer
from sealtrail.log import CheckpointSigner, verify_checkpoint
from sealtrail.merkle import Checkpoint
from sealtrail.note import (
    MAX_NOTE_SIZE,
    MAX_SIGNATURES,
    CosignatureSigner,
    CosignatureVerifier,
    NoteSigner,
    NoteVerifier,
    add_signatures,
    cosignature_timestamp,
    open_note,
    sign_note,
    verify_cosignature,
)
from tests.conftest import ORIGIN

DASH = "\u2014 "
TEXT = "example.com/a note\nsecond line\n"
ROOT = hashlib.sha256(b"root").digest()
TS = 1_700_000_000
MAX_TS = 2**63 - 1


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def key_id(name: str, signature_type: int, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([signature_type]) + public_key).digest()[:4]


def raw_public(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.public_key().public_bytes_raw()


def line(name: str, payload: bytes) -> str:
    return f"{DASH}{name} {b64(payload)}\n"


def plain_line(private_key: Ed25519PrivateKey, name: str, text: str) -> str:
    """A type 0x01 signature line: key ID || Ed25519(note text)."""
    kid = key_id(name, 0x01, raw_public(private_key))
    return line(name, kid + private_key.sign(text.encode()))


def cosigned_message(text: str, timestamp: int) -> bytes:
    # tlog-cosignature, "Ed25519 signed message".
    return b"cosignature/v1\ntime " + str(timestamp).encode() + b"\n" + text.encode()


def cosignature_line(
    private_key: Ed25519PrivateKey,
    name: str,
    text: str,
    timestamp: int,
    *,
    encoded_timestamp: int | None = None,
    message: bytes | None = None,
) -> str:
    """A type 0x04 line: key ID || u64 BE timestamp || Ed25519(cosigned message)."""
    kid = key_id(name, 0x04, raw_public(private_key))
    signature = private_key.sign(message or cosigned_message(text, timestamp))
    stamp = timestamp if encoded_timestamp is None else encoded_timestamp
    return line(name, kid + stamp.to_bytes(8, "big") + signature)


def witness_vkey(private_key: Ed25519PrivateKey, name: str) -> str:
    public = raw_public(private_key)
    material = b64(bytes([0x04]) + public)
    return f"{name}+{key_id(name, 0x04, public).hex()}+{material}"


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def signer_pair(name: str) -> tuple[Ed25519PrivateKey, NoteSigner]:
    private_key = Ed25519PrivateKey.generate()
    return private_key, NoteSigner(name, Ed25519Signer(private_key))


# --- strategies -----------------------------------------------------------------------------

# codec="utf-8" leaves out lone surrogates.
text_lines = st.text(st.characters(min_codepoint=0x20, codec="utf-8"), max_size=24)
note_texts = st.lists(text_lines, min_size=1, max_size=5).map(lambda ls: "\n".join(ls) + "\n")
key_names = st.text(
    st.characters(exclude_categories=("Cs", "Cc", "Cf", "Co", "Cn", "Zs", "Zl", "Zp")).filter(
        lambda c: c != "+" and not c.isspace() and c.isprintable()
    ),
    min_size=1,
    max_size=12,
)
seeds = st.binary(min_size=32, max_size=32)
key_sets = st.lists(st.tuples(key_names, seeds), min_size=1, max_size=3, unique_by=lambda k: k[1])


def make_signers(keys: list[tuple[str, bytes]]) -> list[NoteSigner]:
    return [NoteSigner(name, Ed25519Signer.from_private_bytes(seed)) for name, seed in keys]


# --- sign / open properties -----------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(text=note_texts, keys=key_sets)
def test_sign_then_open_round_trip(text: str, keys: list[tuple[str, bytes]]) -> None:
    signers = make_signers(keys)
    note = sign_note(text, signers)
    # Byte-identical to an independent construction (Ed25519 is deterministic).
    expected = text + "\n"
    for name, seed in keys:
        expected += plain_line(Ed25519PrivateKey.from_private_bytes(seed), name, text)
    assert note == expected.encode()

    opened = open_note(note, verifiers=[s.verifier() for s in signers])
    assert opened.text == text
    assert [(s.name, s.key_id) for s in opened.verified] == [(s.name, s.key_id) for s in signers]
    assert opened.unverified == ()
    for signer in signers:
        signature = opened.verified_by(signer.verifier())
        assert signature is not None
        Ed25519PublicKey.from_public_bytes(signer.verifier().public_key).verify(
            signature.signature, text.encode()
        )
    # Any one trusted key suffices; the others' lines stay unverified.
    alone = open_note(note, verifiers=[signers[-1].verifier()])
    assert alone.text == text
    assert len(alone.verified) == 1
    assert len(alone.unverified) == len(signers) - 1


def assert_flip_outcome(note: bytes, bit: int, text: str, verifiers: list[NoteVerifier]) -> bool:
    """Open ``note`` with ``bit`` flipped; return True if it was (rightly) still accepted.

    A flip in the text, the separator, a signature or the framing must be rejected. A flip
    in a signer's name or key ID can only turn that line into the line of an unknown key,
    which the spec says to ignore: then the other signers' signatures still cover the
    unchanged text, and exactly one line is left unverified.
    """
    try:
        opened = open_note(flip(note, bit), verifiers=verifiers)
    except (MalformedNote, InvalidSignature):
        return False
    assert len(verifiers) >= 2
    assert opened.text == text
    assert len(opened.verified) == len(verifiers) - 1
    assert len(opened.unverified) == 1
    assert bit >= (len(text.encode()) + 1) * 8  # in the signature block
    return True


@settings(max_examples=50, deadline=None)
@given(text=note_texts, keys=key_sets, data=st.data())
def test_any_single_bit_flip_is_rejected_or_harmless(
    text: str, keys: list[tuple[str, bytes]], data: st.DataObject
) -> None:
    signers = make_signers(keys)
    note = sign_note(text, signers)
    bit = data.draw(st.integers(0, len(note) * 8 - 1), label="bit")
    assert_flip_outcome(note, bit, text, [s.verifier() for s in signers])


def test_every_single_bit_flip_exhaustively() -> None:
    signers = [NoteSigner.generate("log.example/a"), NoteSigner.generate("witness.example/b")]
    verifiers = [s.verifier() for s in signers]
    note = sign_note(TEXT, signers)
    accepted = [
        bit for bit in range(len(note) * 8) if assert_flip_outcome(note, bit, TEXT, verifiers)
    ]
    # Flips in a name (e.g. ASCII case) are accepted as an unknown key's line.
    assert accepted
    one = sign_note(TEXT, signers[:1])
    for bit in range(len(one) * 8):
        with pytest.raises(VerificationError):
            open_note(flip(one, bit), verifiers=verifiers[:1])


# --- text and separator rules ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "\n",
        "a\n\nb\n",  # the text may contain blank lines
        "Note\n\n",  # and end with one
        "\n\n\n",
        "tab-free \u00a0 nbsp, \u2028 line separator, \x7f delete, \u2014 dash\n",
        "\u2014 looks like a signature line ABCD\n",
        "\u2014 a AAAAAAAAAAAAAAAAAAAAAAAA\n\n\u2014 b AAAAAAAAAAAAAAAAAAAA\n",
    ],
    ids=[
        "newline-only",
        "blank-line",
        "trailing-blank",
        "blank-lines",
        "odd-chars",
        "dash",
        "sigs",
    ],
)
def test_unusual_valid_texts_round_trip(text: str) -> None:
    signer = NoteSigner.generate("log.example/a")
    opened = open_note(sign_note(text, [signer]), verifiers=[signer.verifier()])
    assert opened.text == text


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "end with a newline"),
        ("no final newline", "end with a newline"),
        ("a\nb", "end with a newline"),
        ("crlf\r\n", "control characters"),
        ("tab\there\n", "control characters"),
        ("nul\x00\n", "control characters"),
        ("lone \ud800 surrogate\n", "lone surrogate"),
    ],
)
def test_sign_rejects_text_a_verifier_would_reject(text: str, reason: str) -> None:
    signer = NoteSigner.generate("log.example/a")
    with pytest.raises(InvalidInput, match=reason):
        sign_note(text, [signer])
    with pytest.raises(InvalidInput):
        signer.signature_line(text)


def test_sign_needs_a_signer_and_open_needs_a_verifier() -> None:
    signer = NoteSigner.generate("log.example/a")
    with pytest.raises(InvalidInput, match="at least one signer"):
        sign_note(TEXT, [])
    with pytest.raises(InvalidInput, match="at least one trusted"):
        open_note(sign_note(TEXT, [signer]), verifiers=[])
    with pytest.raises(InvalidInput, match="bytes"):
        open_note(sign_note(TEXT, [signer]).decode(), verifiers=[signer.verifier()])  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="NoteVerifier"):
        open_note(sign_note(TEXT, [signer]), verifiers=[signer])  # type: ignore[list-item]


def good_note() -> tuple[NoteSigner, str]:
    signer = NoteSigner.generate("log.example/a")
    return signer, signer.signature_line(TEXT)


def malformed_notes(signer: NoteSigner) -> dict[str, bytes]:
    sig = signer.signature_line(TEXT)
    payload = sig.split(" ")[-1].rstrip("\n")
    kid = signer.key_id
    urlsafe_own = base64.urlsafe_b64encode(kid + bytes([0xFB]) * 66).decode()
    assert "-" in urlsafe_own or "_" in urlsafe_own
    non_canonical_own = b64(kid + bytes(66))[:-3] + "B=="
    return {
        "no-separator": (TEXT + sig).encode(),
        "no-signatures": (TEXT + "\n").encode(),
        "no-final-newline": (TEXT + "\n" + sig.rstrip("\n")).encode(),
        "crlf": (TEXT + "\n" + sig).replace("\n", "\r\n").encode(),
        "hyphens": (TEXT + "\n" + sig.replace(DASH, "-- ")).encode(),
        "no-space-after-dash": (TEXT + "\n" + sig.replace(DASH, "\u2014")).encode(),
        "en-dash": (TEXT + "\n" + sig.replace("\u2014", "\u2013")).encode(),
        "no-name": (TEXT + "\n" + f"{DASH} {payload}\n").encode(),
        "plus-in-name": (TEXT + "\n" + f"{DASH}a+b {payload}\n").encode(),
        "nbsp-in-name": (TEXT + "\n" + f"{DASH}a\u00a0b {payload}\n").encode(),
        "two-spaces": (TEXT + "\n" + sig.replace(" ", "  ", 2).replace("  ", " ", 1)).encode(),
        "trailing-space": (TEXT + "\n" + sig.rstrip("\n") + " \n").encode(),
        "no-payload": (TEXT + "\n" + f"{DASH}log.example/a \n").encode(),
        "unpadded": (TEXT + "\n" + sig.replace("=", "")).encode(),
        # The signer's own name and key ID on a line that is not canonical base64 or is
        # too short: a trusted key's line is held to the format.
        "urlsafe": (TEXT + "\n" + f"{DASH}log.example/a {urlsafe_own}\n").encode(),
        "non-canonical-pad-bits": (
            TEXT + "\n" + f"{DASH}log.example/a {non_canonical_own}\n"
        ).encode(),
        "key-id-only": (TEXT + "\n" + line("log.example/a", kid)).encode(),
        "short": (TEXT + "\n" + line("log.example/a", kid[:3])).encode(),
        "trailing-text-line": (TEXT + "\n" + sig + "more text\n").encode(),
        "invalid-utf8": b"\xff" + (TEXT + "\n" + sig).encode(),
        "control-in-signatures": (TEXT + "\n" + sig + f"{DASH}n\t{payload}\n").encode(),
    }


SIGNER = good_note()[0]
MALFORMED = malformed_notes(SIGNER)


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_notes_are_rejected(case: str) -> None:
    with pytest.raises(MalformedNote):
        open_note(MALFORMED[case], verifiers=[SIGNER.verifier()])


def unknown_keys_odd_lines() -> dict[str, str]:
    """Signature lines of keys the verifier does not know, whose signatures are not what
    signed-note's Ed25519 lines look like: theirs to check, not ours."""
    other = NoteSigner.generate("log.example/a").key_id  # the trusted name, another key
    return {
        "urlsafe": f"{DASH}n {base64.urlsafe_b64encode(bytes([0xFB]) * 70).decode()}\n",
        "non-canonical-pad-bits": f"{DASH}n {b64(bytes(70))[:-3]}B==\n",
        "key-id-only": line("n", b"abcd"),
        "short": line("n", b"abc"),
        "not-base64": f"{DASH}witness.example/w sig:v2:0123456789abcdef\n",
        "same-name-other-key-unpadded": f"{DASH}log.example/a {b64(other + bytes(64))[:-2]}\n",
    }


@pytest.mark.parametrize("case", sorted(unknown_keys_odd_lines()))
def test_an_unknown_key_s_unparseable_line_is_ignored(case: str) -> None:
    """C2SP signed-note: verifiers MUST ignore signatures from unknown keys. Only the lines
    of trusted keys must be canonical base64."""
    odd = unknown_keys_odd_lines()[case]
    own = SIGNER.signature_line(TEXT)
    for lines in ([odd, own], [own, odd]):
        opened = open_note((TEXT + "\n" + "".join(lines)).encode(), verifiers=[SIGNER.verifier()])
        assert [s.line() for s in opened.verified] == [own]
        assert opened.unverified == ()
    # Alone, it is no trusted key's signature: the note is not accepted, nor malformed.
    with pytest.raises(InvalidSignature, match="none of the note's 1 signature"):
        open_note((TEXT + "\n" + odd).encode(), verifiers=[SIGNER.verifier()])


def test_an_unknown_key_s_lines_still_count_towards_the_limit() -> None:
    own = SIGNER.signature_line(TEXT)
    odd = f"{DASH}n sig:v2\n"
    note = (TEXT + "\n" + own + odd * (MAX_SIGNATURES - 1)).encode()
    assert open_note(note, verifiers=[SIGNER.verifier()]).text == TEXT
    with pytest.raises(MalformedNote, match=f"more than {MAX_SIGNATURES}"):
        open_note(note + odd.encode(), verifiers=[SIGNER.verifier()])


def test_the_last_blank_line_separates_text_from_signatures() -> None:
    a = NoteSigner.generate("log.example/a")
    b = NoteSigner.generate("log.example/b")
    # A blank line between two signature lines makes the first one part of the text.
    note = (TEXT + "\n" + a.signature_line(TEXT) + "\n" + b.signature_line(TEXT)).encode()
    with pytest.raises(InvalidSignature):
        open_note(note, verifiers=[a.verifier(), b.verifier()])
    with pytest.raises(InvalidSignature, match="trusted"):
        open_note(note, verifiers=[a.verifier()])
    # A signature over text that itself ends in a blank line still opens.
    text = TEXT + "\n"
    opened = open_note(sign_note(text, [a]), verifiers=[a.verifier()])
    assert opened.text == text


# --- known and unknown keys -----------------------------------------------------------------


def test_unknown_keys_are_ignored_but_one_known_signature_is_required() -> None:
    private_key, signer = signer_pair("log.example/a")
    stranger = Ed25519PrivateKey.generate()
    kid = signer.key_id
    lines = [
        plain_line(stranger, "\u043a\u043b\u044e\u0447/\u65e5\u672c", TEXT),  # odd valid name
        plain_line(stranger, "log.example/a", TEXT),  # same name, other key ID
        line("other.example/x", kid + stranger.sign(TEXT.encode())),  # same key ID, other name
        line("zero-width\u200bname", b"\x00" * 4 + b"\x01"),  # unverifiable, unknown: fine
    ]
    own = plain_line(private_key, "log.example/a", TEXT)
    note = (TEXT + "\n" + "".join(lines) + own).encode()
    opened = open_note(note, verifiers=[signer.verifier()])
    assert opened.text == TEXT
    assert [s.line() for s in opened.verified] == [own]
    assert [s.line() for s in opened.unverified] == lines
    assert opened.verified_by(NoteSigner.generate("log.example/a").verifier()) is None

    only_unknown = (TEXT + "\n" + "".join(lines)).encode()
    with pytest.raises(InvalidSignature, match="none of the note's 4 signature"):
        open_note(only_unknown, verifiers=[signer.verifier()])


@pytest.mark.parametrize("bad_first", [True, False])
def test_a_failing_known_signature_rejects_the_whole_note(bad_first: bool) -> None:
    private_key, signer = signer_pair("log.example/a")
    good = plain_line(private_key, "log.example/a", TEXT)
    bad = line("log.example/a", signer.key_id + private_key.sign(b"other text\n"))
    lines = [bad, good] if bad_first else [good, bad]
    note = (TEXT + "\n" + "".join(lines)).encode()
    with pytest.raises(InvalidSignature, match=re.escape(f"log.example/a+{signer.key_id.hex()}")):
        open_note(note, verifiers=[signer.verifier()])


@pytest.mark.parametrize("size", [0, 1, 63, 65, 72])
def test_known_signature_of_wrong_length_is_invalid(size: int) -> None:
    signer = NoteSigner.generate("log.example/a")
    note = (TEXT + "\n" + line("log.example/a", signer.key_id + b"\x01" * size)).encode()
    error = MalformedNote if size == 0 else InvalidSignature
    with pytest.raises(error):
        open_note(note, verifiers=[signer.verifier()])


def test_duplicate_signatures_by_the_same_key() -> None:
    signer = NoteSigner.generate("log.example/a")
    other = NoteSigner.generate("other.example/b")
    own, foreign = signer.signature_line(TEXT), other.signature_line(TEXT)
    note = (TEXT + "\n" + own + foreign + own + foreign + own).encode()
    opened = open_note(note, verifiers=[signer.verifier()])
    assert [s.line() for s in opened.verified] == [own]
    assert [s.line() for s in opened.unverified] == [foreign]
    # The same verifier listed twice is not ambiguous.
    assert open_note(note, verifiers=[signer.verifier(), signer.verifier()]).text == TEXT
    with pytest.raises(InvalidInput, match="same name and key ID"):
        sign_note(TEXT, [signer, signer])


# Two Ed25519 seeds whose keys collide on the key ID cd34ea96 under one name, found by a
# birthday search over SHA-256("key-id-collision-<i>"). The test checks the collision.
COLLIDING_NAME = "collision.example/log"
COLLIDING_SEEDS = (
    hashlib.sha256(b"key-id-collision-47153").digest(),
    hashlib.sha256(b"key-id-collision-103745").digest(),
)


def colliding_signers() -> tuple[NoteSigner, NoteSigner]:
    a, b = (
        NoteSigner(COLLIDING_NAME, Ed25519Signer.from_private_bytes(seed))
        for seed in COLLIDING_SEEDS
    )
    assert a.key_id == b.key_id == bytes.fromhex("cd34ea96")
    assert a.verifier() != b.verifier()
    return a, b


def test_key_id_collision_same_name() -> None:
    a, b = colliding_signers()
    note = sign_note(TEXT, [a])
    assert open_note(note, verifiers=[a.verifier()]).text == TEXT
    # Trusting only the other key: the line matches its name and key ID, so it must be
    # verified, and fails (C2SP signed-note: all an attacker gets is a verification failure).
    with pytest.raises(InvalidSignature, match="does not verify"):
        open_note(note, verifiers=[b.verifier()])
    # Trusting both is an ambiguous configuration, refused up front.
    with pytest.raises(InvalidInput, match="share the name"):
        open_note(note, verifiers=[a.verifier(), b.verifier()])
    with pytest.raises(InvalidInput, match="same name and key ID"):
        sign_note(TEXT, [a, b])
    # add_signatures treats a line with the same name and key ID as a replacement.
    replaced = add_signatures(note, [b.signature_line(TEXT)])
    assert open_note(replaced, verifiers=[b.verifier()]).text == TEXT
    with pytest.raises(InvalidSignature):
        open_note(replaced, verifiers=[a.verifier()])


# --- limits ---------------------------------------------------------------------------------


def test_limits_are_the_documented_ones() -> None:
    assert MAX_SIGNATURES == 100  # Go x/mod/sumdb/note's limit; C2SP requires at least 16
    assert MAX_NOTE_SIZE == 1 << 20
    assert issubclass(TooLarge, InvalidInput)


def test_too_many_signers() -> None:
    signers = [NoteSigner.generate(f"s{i}.example") for i in range(MAX_SIGNATURES + 1)]
    with pytest.raises(TooLarge, match=f"at most {MAX_SIGNATURES}"):
        sign_note(TEXT, signers)
    note = sign_note(TEXT, signers[:MAX_SIGNATURES])
    opened = open_note(note, verifiers=[signers[0].verifier()])
    assert len(opened.unverified) == MAX_SIGNATURES - 1
    with pytest.raises(TooLarge, match=f"at most {MAX_SIGNATURES}"):
        add_signatures(note, [signers[-1].signature_line(TEXT)])
    too_many = note + signers[-1].signature_line(TEXT).encode()
    with pytest.raises(MalformedNote, match=f"more than {MAX_SIGNATURES}"):
        open_note(too_many, verifiers=[signers[0].verifier()])


def test_note_size_limit_is_inclusive() -> None:
    signer = NoteSigner.generate("log.example/a")
    line_size = len(signer.signature_line(TEXT).encode())
    fits = "x" * (MAX_NOTE_SIZE - 1 - line_size - 1) + "\n"
    note = sign_note(fits, [signer])
    assert len(note) == MAX_NOTE_SIZE
    assert open_note(note, verifiers=[signer.verifier()]).text == fits
    with pytest.raises(TooLarge, match="exceed"):
        sign_note("x" + fits, [signer])
    with pytest.raises(MalformedNote, match="larger than"):
        open_note(b"x" + note, verifiers=[signer.verifier()])
    with pytest.raises(TooLarge, match="exceed"):
        add_signatures(note, [NoteSigner.generate("b").signature_line(fits)])


def test_add_signatures_rejects_bad_lines() -> None:
    signer = NoteSigner.generate("log.example/a")
    note = sign_note(TEXT, [signer])
    other = NoteSigner.generate("other.example/b").signature_line(TEXT)
    for bad in [other.rstrip("\n"), other + other, "-- n AAAAAAAA\n", 42]:
        with pytest.raises(InvalidInput):
            add_signatures(note, [bad])  # type: ignore[list-item]
    with pytest.raises(InvalidInput, match="repeats"):
        add_signatures(note, [other, other])
    with pytest.raises(MalformedNote):
        add_signatures(TEXT.encode(), [other])
    merged = add_signatures(note, [other])
    assert merged == note + other.encode()
    assert add_signatures(merged, [other]) == merged


# --- keys and key strings -------------------------------------------------------------------


def test_vkey_and_skey_round_trip() -> None:
    signer = NoteSigner.generate("log.example/a")
    parsed = NoteVerifier.parse(signer.verifier_key())
    assert parsed == signer.verifier()
    assert hash(parsed) == hash(signer.verifier())
    skey = signer.private_key_string()
    again = NoteSigner.from_private_key_string(skey)
    assert again.verifier_key() == signer.verifier_key()
    assert again.signature_line(TEXT) == signer.signature_line(TEXT)
    assert skey not in repr(signer) + str(signer) + repr(parsed)


@pytest.mark.parametrize(
    "name", ["", "a b", "a+b", "tab\tname", "nbsp\u00a0name", "bidi\u202ename"]
)
def test_bad_key_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidInput):
        NoteSigner.generate(name)
    with pytest.raises(InvalidInput):
        NoteVerifier(name, b"\x00" * 32)


def test_bad_private_key_strings_never_echo_the_secret() -> None:
    signer = NoteSigner.generate("log.example/a")
    skey = signer.private_key_string()
    prefix, rest = skey[: len("PRIVATE+KEY+")], skey[len("PRIVATE+KEY+") :]
    name, hash_hex, material = rest.split("+", 2)
    seed = base64.b64decode(material)[1:]
    wrong_type = b64(bytes([0x04]) + seed)
    wrong_length = b64(bytes([0x01]) + seed + bytes(1))
    variants = [
        rest,  # no prefix
        f"{prefix}{name}+{hash_hex}",  # two parts
        f"{prefix}{name}+00000000+{material}",  # wrong key ID
        f"{prefix}{name}+{hash_hex}+{wrong_type}",  # wrong type byte
        f"{prefix}{name}+{hash_hex}+{wrong_length}",  # wrong length
        f"{prefix}{name}+{hash_hex}+{material[:-1]}",  # truncated base64
        f"{prefix}bad name+{hash_hex}+{material}",  # bad name
    ]
    for variant in variants:
        with pytest.raises(InvalidInput) as info:
            NoteSigner.from_private_key_string(variant)
        shown = info.value.diagnostics()
        assert material not in shown
        assert seed.hex() not in shown


ZERO_KEY = b64(bytes([0x01]) + bytes(32))


@pytest.mark.parametrize(
    "vkey",
    [
        f"log.example/a+zzzzzzzz+{ZERO_KEY}",
        f"log.example/a+1234567+{ZERO_KEY}",
        f"log.example/a+00000000+{ZERO_KEY}",
        "log.example/a+00000000+",
        f"+00000000+{ZERO_KEY}",
    ],
    ids=["non-hex-id", "short-id", "wrong-id", "empty-key", "empty-name"],
)
def test_bad_vkeys(vkey: str) -> None:
    with pytest.raises(InvalidInput):
        NoteVerifier.parse(vkey)


def test_only_ed25519_signers_can_sign_notes() -> None:
    class ES256Signer:
        algorithm = "ES256"

        def public_key_bytes(self) -> bytes:
            return b"\x04" * 65

        def sign(self, message: bytes) -> bytes:
            return b"\x00" * 64

    with pytest.raises(InvalidInput, match="Ed25519 keys only"):
        NoteSigner("log.example/a", ES256Signer())  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="Ed25519 keys only"):
        CosignatureSigner("witness.example/w", ES256Signer())  # type: ignore[arg-type]


# --- cosignatures (C2SP tlog-cosignature, cosignature/v1) -----------------------------------

WITNESS = "witness.example/w1"
CHECKPOINT_TEXT = Checkpoint(ORIGIN, 42, ROOT).to_text()


def test_spec_example_cosignature_timestamp() -> None:
    # tlog-cosignature's example line; its message shows "time 1679315147".
    raw = base64.b64decode(
        "jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZ"
        "qhf5nNo0xUe+mbIUBkBIfZ+qnA=="
    )
    assert cosignature_timestamp(raw[4:]) == 1679315147


@pytest.mark.parametrize("timestamp", [0, 1, TS, MAX_TS])
def test_independent_cosignature_verifies(timestamp: int) -> None:
    witness = Ed25519PrivateKey.generate()
    verifier = CosignatureVerifier.parse(witness_vkey(witness, WITNESS))
    assert NoteVerifier.parse(witness_vkey(witness, WITNESS)) == verifier
    cosig = cosignature_line(witness, WITNESS, CHECKPOINT_TEXT, timestamp)
    payload = base64.b64decode(cosig.rsplit(" ", 1)[-1])
    assert payload[:4] == verifier.key_id
    assert verify_cosignature(verifier=verifier, text=CHECKPOINT_TEXT, signature=payload[4:]) == (
        timestamp
    )
    opened = open_note((CHECKPOINT_TEXT + "\n" + cosig).encode(), verifiers=[verifier])
    signature = opened.verified_by(verifier)
    assert signature is not None
    assert signature.timestamp == timestamp
    # Our signer produces the same bytes.
    ours = CosignatureSigner(WITNESS, Ed25519Signer(witness))
    assert ours.signature_line(CHECKPOINT_TEXT, timestamp=timestamp) == cosig
    assert ours.verifier_key() == witness_vkey(witness, WITNESS)


def cosignature_payload(cosig: str) -> bytes:
    return base64.b64decode(cosig.rsplit(" ", 1)[-1])[4:]


def bad_cosignatures(witness: Ed25519PrivateKey) -> dict[str, str]:
    text = CHECKPOINT_TEXT
    return {
        "wrong-timestamp": cosignature_line(witness, WITNESS, text, TS, encoded_timestamp=TS + 1),
        "altered-checkpoint": cosignature_line(witness, WITNESS, text.replace("42", "43"), TS),
        "no-header": cosignature_line(
            witness, WITNESS, text, TS, message=f"time {TS}\n{text}".encode()
        ),
        "leading-zero-time": cosignature_line(
            witness, WITNESS, text, TS, message=f"cosignature/v1\ntime 0{TS}\n{text}".encode()
        ),
        "plain-signature-over-text": cosignature_line(
            witness, WITNESS, text, TS, message=text.encode()
        ),
        "timestamp-over-2^63-1": cosignature_line(witness, WITNESS, text, MAX_TS + 1),
        "no-timestamp": line(
            WITNESS, key_id(WITNESS, 0x04, raw_public(witness)) + witness.sign(text.encode())
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "wrong-timestamp",
        "altered-checkpoint",
        "no-header",
        "leading-zero-time",
        "plain-signature-over-text",
        "timestamp-over-2^63-1",
        "no-timestamp",
    ],
)
def test_bad_cosignature_is_rejected(case: str) -> None:
    witness = Ed25519PrivateKey.generate()
    verifier = CosignatureVerifier.parse(witness_vkey(witness, WITNESS))
    cosig = bad_cosignatures(witness)[case]
    with pytest.raises(InvalidSignature):
        verify_cosignature(
            verifier=verifier, text=CHECKPOINT_TEXT, signature=cosignature_payload(cosig)
        )
    with pytest.raises(InvalidSignature, match="does not verify"):
        open_note((CHECKPOINT_TEXT + "\n" + cosig).encode(), verifiers=[verifier])


def test_cosignature_from_another_key_is_rejected_or_ignored() -> None:
    witness, impostor = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    verifier = CosignatureVerifier.parse(witness_vkey(witness, WITNESS))
    forged = cosignature_line(impostor, WITNESS, CHECKPOINT_TEXT, TS)
    with pytest.raises(InvalidSignature):
        verify_cosignature(
            verifier=verifier, text=CHECKPOINT_TEXT, signature=cosignature_payload(forged)
        )
    # In a note the impostor's key ID does not match: an unknown key, ignored.
    with pytest.raises(InvalidSignature, match="trusted"):
        open_note((CHECKPOINT_TEXT + "\n" + forged).encode(), verifiers=[verifier])
    # The impostor's line carrying the witness's key ID must verify, and fails.
    hijacked = line(WITNESS, verifier.key_id + cosignature_payload(forged))
    with pytest.raises(InvalidSignature, match="does not verify"):
        open_note((CHECKPOINT_TEXT + "\n" + hijacked).encode(), verifiers=[verifier])


def test_cosignature_and_plain_keys_are_domain_separated() -> None:
    witness = Ed25519PrivateKey.generate()
    cosigned = CHECKPOINT_TEXT + "\n" + cosignature_line(witness, WITNESS, CHECKPOINT_TEXT, TS)
    plain = NoteVerifier(WITNESS, raw_public(witness))
    with pytest.raises(InvalidSignature, match="trusted"):
        open_note(cosigned.encode(), verifiers=[plain])
    signed = (CHECKPOINT_TEXT + "\n" + plain_line(witness, WITNESS, CHECKPOINT_TEXT)).encode()
    cosigner = CosignatureVerifier(WITNESS, raw_public(witness))
    with pytest.raises(InvalidSignature, match="trusted"):
        open_note(signed, verifiers=[cosigner])
    assert plain != cosigner
    assert plain.key_id != cosigner.key_id


def test_verify_cosignature_argument_checks() -> None:
    witness = Ed25519PrivateKey.generate()
    verifier = CosignatureVerifier.parse(witness_vkey(witness, WITNESS))
    payload = cosignature_payload(cosignature_line(witness, WITNESS, CHECKPOINT_TEXT, TS))
    plain = NoteVerifier(WITNESS, raw_public(witness))
    with pytest.raises(InvalidInput, match="CosignatureVerifier"):
        verify_cosignature(verifier=plain, text=CHECKPOINT_TEXT, signature=payload)  # type: ignore[arg-type]
    with pytest.raises(MalformedNote, match="newline"):
        verify_cosignature(verifier=verifier, text=CHECKPOINT_TEXT[:-1], signature=payload)
    with pytest.raises(MalformedNote, match="Unicode"):
        verify_cosignature(verifier=verifier, text="\ud800\n", signature=payload)


@pytest.mark.parametrize("timestamp", [-1, MAX_TS + 1, True, 1.0])
def test_cosignature_signer_rejects_bad_timestamps(timestamp: object) -> None:
    ours = CosignatureSigner(WITNESS, Ed25519Signer.generate())
    with pytest.raises(InvalidInput, match="timestamp"):
        ours.signature_line(CHECKPOINT_TEXT, timestamp=timestamp)  # type: ignore[arg-type]


# --- checkpoints ----------------------------------------------------------------------------


def test_checkpoint_round_trip(signer: CheckpointSigner) -> None:
    signed = signer.sign(size=42, root=ROOT)
    assert signed.note.decode().startswith(CHECKPOINT_TEXT + "\n" + DASH + ORIGIN + " ")
    assert NoteVerifier.parse(signer.verifier_key()) == signer.verifier
    verified = verify_checkpoint(signed.note, origin=ORIGIN, verifiers=[signer.verifier])
    assert verified == signed
    assert (verified.size, verified.root) == (42, ROOT)


def test_checkpoint_for_another_origin_is_rejected(signer: CheckpointSigner) -> None:
    signed = signer.sign(size=1, root=ROOT)
    with pytest.raises(InvalidSignature, match=re.escape("expected 'other.example/log'")):
        verify_checkpoint(signed.note, origin="other.example/log", verifiers=[signer.verifier])


def test_checkpoint_from_another_key_is_rejected(signer: CheckpointSigner) -> None:
    impostor = CheckpointSigner(origin=ORIGIN, signer=Ed25519Signer.generate())
    with pytest.raises(InvalidSignature):
        verify_checkpoint(
            impostor.sign(size=1, root=ROOT).note, origin=ORIGIN, verifiers=[signer.verifier]
        )


def test_checkpoint_with_extension_lines() -> None:
    private_key, note_signer = signer_pair(ORIGIN)
    checkpoint = Checkpoint(ORIGIN, 7, ROOT, ("ext/one 1", "\u2014 ext two"))
    note = sign_note(checkpoint.to_text(), [note_signer])
    verified = verify_checkpoint(note, origin=ORIGIN, verifiers=[note_signer.verifier()])
    assert verified.checkpoint == checkpoint
    assert verified.checkpoint.extensions == ("ext/one 1", "\u2014 ext two")
    # The signature covers the extension lines.
    altered = note.replace(b"ext/one 1", b"ext/one 2")
    with pytest.raises(InvalidSignature):
        verify_checkpoint(altered, origin=ORIGIN, verifiers=[note_signer.verifier()])
    assert private_key.public_key().public_bytes_raw() == note_signer.verifier().public_key


def test_a_checkpoint_another_log_signed_with_del_in_its_extension_lines_verifies() -> None:
    """C2SP signed-note forbids only controls below U+0020; DEL (U+007F) is text."""
    note_signer = NoteSigner.generate(ORIGIN)
    text = f"{ORIGIN}\n7\n{b64(ROOT)}\nrubbed\x7fout\n"
    verified = verify_checkpoint(
        sign_note(text, [note_signer]), origin=ORIGIN, verifiers=[note_signer.verifier()]
    )
    assert verified.checkpoint.extensions == ("rubbed\x7fout",)
    # The names Sealtrail signs under (its origin is its key name) still have none.
    with pytest.raises(InvalidInput, match="printable"):
        CheckpointSigner(origin="log\x7f.example", signer=Ed25519Signer.generate())


def test_signed_note_that_is_not_a_checkpoint_is_malformed() -> None:
    note_signer = NoteSigner.generate(ORIGIN)
    note = sign_note(f"{ORIGIN}\nnot a size\n", [note_signer])
    with pytest.raises(MalformedNote, match="not a checkpoint"):
        verify_checkpoint(note, origin=ORIGIN, verifiers=[note_signer.verifier()])


def test_checkpoint_signed_by_log_and_cosigned_by_witness(signer: CheckpointSigner) -> None:
    signed = signer.sign(size=42, root=ROOT)
    witness = Ed25519PrivateKey.generate()
    witness_verifier = CosignatureVerifier.parse(witness_vkey(witness, WITNESS))
    cosig = cosignature_line(witness, WITNESS, CHECKPOINT_TEXT, TS)
    note = add_signatures(signed.note, [cosig])
    assert note == signed.note + cosig.encode()

    verifiers = [signer.verifier, witness_verifier]
    verified = verify_checkpoint(note, origin=ORIGIN, verifiers=verifiers)
    assert verified.checkpoint == signed.checkpoint
    opened = open_note(note, verifiers=verifiers)
    assert [(s.name, s.timestamp) for s in opened.verified] == [(ORIGIN, None), (WITNESS, TS)]
    # The log key alone still verifies; the cosignature is then unverified.
    alone = open_note(note, verifiers=[signer.verifier])
    assert [s.name for s in alone.unverified] == [WITNESS]
    assert verify_checkpoint(note, origin=ORIGIN, verifiers=[signer.verifier]) == verified
    # A bad cosignature from a trusted witness spoils the whole note.
    forged = add_signatures(
        signed.note, [cosignature_line(witness, WITNESS, CHECKPOINT_TEXT, TS, encoded_timestamp=1)]
    )
    with pytest.raises(InvalidSignature):
        verify_checkpoint(forged, origin=ORIGIN, verifiers=verifiers)


def test_checkpoint_signed_only_by_a_witness_is_refused(signer: CheckpointSigner) -> None:
    # A witness key that happens to be trusted must not stand in for the log's own key.
    witness = NoteSigner("witness.example", Ed25519Signer.generate())
    text = Checkpoint(ORIGIN, 1, ROOT, ()).to_text()
    note = sign_note(text, [witness])
    with pytest.raises(InvalidSignature, match="log's own key"):
        verify_checkpoint(note, origin=ORIGIN, verifiers=[signer.verifier, witness.verifier()])
    both = signer.sign(size=1, root=ROOT).note
    verify_checkpoint(both, origin=ORIGIN, verifiers=[signer.verifier, witness.verifier()])
