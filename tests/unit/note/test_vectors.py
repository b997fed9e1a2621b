"""Known-answer tests: every section of tlog/signed-note/signed-note-vectors.json.

Origins (C2SP signed-note, Go x/mod/sumdb/note, transparency-dev/formats) are listed in
tests/vectors/tlog/README.md.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

import pytest

from sealtrail.errors import InvalidInput, InvalidSignature, MalformedNote
from sealtrail.note import (
    MAX_SIGNATURES,
    CosignatureVerifier,
    NoteSigner,
    NoteVerifier,
    cosignature_timestamp,
    open_note,
    sign_note,
)
from tests._vectors import load_json

VECTORS: dict[str, Any] = load_json("tlog", "signed-note", "signed-note-vectors.json")
CASES: dict[str, dict[str, Any]] = {case["id"]: case for case in VECTORS["cases"]}

# Every section and case is consumed below; a new one in the file fails this test.
KNOWN_SECTIONS = {"_format", "cases", "vkeys_only", "cosignature_timestamp"}
KNOWN_CASES = {
    "c2sp-signed-note-example",
    "go-sumdb-note-two-signers",
    "go-sumdb-note-bad-vkeys",
    "go-sumdb-note-malformed",
    "go-sumdb-note-too-many-sigs",
}

VALID_NOTE_CASES = sorted(cid for cid, case in CASES.items() if "note" in case)
SKEY_CASES = sorted(cid for cid, case in CASES.items() if "skey" in case)


def test_every_section_and_case_is_covered() -> None:
    assert set(VECTORS) == KNOWN_SECTIONS
    assert set(CASES) == KNOWN_CASES
    assert len(VECTORS["cases"]) == len(CASES)  # ids are unique
    assert VALID_NOTE_CASES == ["c2sp-signed-note-example", "go-sumdb-note-two-signers"]
    assert SKEY_CASES == ["go-sumdb-note-two-signers"]


# --- valid notes ----------------------------------------------------------------------------


def vkey_ids(case_id: str) -> list[tuple[str, str]]:
    return [(case_id, vkey) for vkey in CASES[case_id]["vkeys"]]


ALL_VKEYS = [pair for cid in VALID_NOTE_CASES for pair in vkey_ids(cid)]


@pytest.mark.parametrize(
    ("case_id", "vkey"), ALL_VKEYS, ids=[f"{c}-{v.split('+')[0]}" for c, v in ALL_VKEYS]
)
def test_vkey_parses_and_round_trips(case_id: str, vkey: str) -> None:
    verifier = NoteVerifier.parse(vkey)
    name, key_id_hex, material_b64 = vkey.split("+", 2)
    material = base64.b64decode(material_b64)
    assert type(verifier) is NoteVerifier
    assert verifier.name == name
    assert verifier.key_id.hex() == key_id_hex
    assert material[0] == 0x01
    assert verifier.public_key == material[1:]
    assert verifier.verifier_key() == vkey
    # Independent key ID: SHA-256(name || 0x0A || 0x01 || public key)[:4].
    assert hashlib.sha256(name.encode() + b"\n" + material).digest()[:4] == verifier.key_id


@pytest.mark.parametrize("case_id", VALID_NOTE_CASES)
def test_valid_note_opens_with_all_its_keys(case_id: str) -> None:
    case = CASES[case_id]
    verifiers = [NoteVerifier.parse(vkey) for vkey in case["vkeys"]]
    assert set(case["expect"]) == set(case["vkeys"])
    assert set(case["expect"].values()) == {"valid"}
    opened = open_note(case["note"].encode("utf-8"), verifiers=verifiers)
    assert opened.text == case["text"]
    assert [s.name for s in opened.verified] == [v.name for v in verifiers]
    assert opened.unverified == ()
    for verifier in verifiers:
        signature = opened.verified_by(verifier)
        assert signature is not None
        assert signature.key_id == verifier.key_id
        assert signature.timestamp is None
        assert signature.line() in case["note"]


@pytest.mark.parametrize(
    ("case_id", "vkey"), ALL_VKEYS, ids=[f"{c}-{v.split('+')[0]}" for c, v in ALL_VKEYS]
)
def test_valid_note_opens_with_each_key_alone(case_id: str, vkey: str) -> None:
    case = CASES[case_id]
    verifier = NoteVerifier.parse(vkey)
    opened = open_note(case["note"].encode("utf-8"), verifiers=[verifier])
    assert opened.text == case["text"]
    assert [s.name for s in opened.verified] == [verifier.name]
    # The other signers' lines are kept, unverified.
    assert {s.name for s in opened.unverified} == {
        v.split("+")[0] for v in case["vkeys"] if v != vkey
    }


@pytest.mark.parametrize("case_id", VALID_NOTE_CASES)
def test_valid_note_rejected_without_a_trusted_key(case_id: str) -> None:
    stranger = NoteSigner.generate("stranger.example/key").verifier()
    with pytest.raises(InvalidSignature, match="trusted"):
        open_note(CASES[case_id]["note"].encode("utf-8"), verifiers=[stranger])


@pytest.mark.parametrize("case_id", VALID_NOTE_CASES)
def test_valid_note_with_altered_text_is_rejected(case_id: str) -> None:
    case = CASES[case_id]
    verifiers = [NoteVerifier.parse(vkey) for vkey in case["vkeys"]]
    note = case["note"].replace(case["text"], case["text"].replace("e", "E", 1), 1)
    assert note != case["note"]
    with pytest.raises(InvalidSignature, match="does not verify"):
        open_note(note.encode("utf-8"), verifiers=verifiers)


# --- the deterministic test private key -----------------------------------------------------


@pytest.mark.parametrize("case_id", SKEY_CASES)
def test_skey_signs_byte_identical_line(case_id: str) -> None:
    case = CASES[case_id]
    signer = NoteSigner.from_private_key_string(case["skey"])
    assert signer.verifier_key() in case["vkeys"]
    line = signer.signature_line(case["text"])
    assert line in case["note"].splitlines(keepends=True)
    assert signer.private_key_string() == case["skey"]
    # The whole note as this key alone would sign it (Ed25519 is deterministic).
    assert sign_note(case["text"], [signer]) == f"{case['text']}\n{line}".encode()


@pytest.mark.parametrize("case_id", SKEY_CASES)
def test_skey_is_not_a_vkey(case_id: str) -> None:
    skey = CASES[case_id]["skey"]
    with pytest.raises(InvalidInput, match="private signer key") as info:
        NoteVerifier.parse(skey)
    assert skey not in info.value.diagnostics()
    assert skey.rsplit("+", 1)[1] not in info.value.diagnostics()


# --- bad verifier keys ----------------------------------------------------------------------

BAD_VKEYS = CASES["go-sumdb-note-bad-vkeys"]["bad_vkeys"]
BAD_VKEY_REASONS = [
    # Go's lenient base64 reads the first; it is then 36 bytes, the wrong key length. Ours
    # insists on canonical base64 (zero pad bits) and stops there: see the test below.
    "not canonical standard base64",
    "unsupported signature type 0x65",
]


def test_bad_vkeys_expectation() -> None:
    assert CASES["go-sumdb-note-bad-vkeys"]["expect"].startswith("reject")
    assert len(BAD_VKEYS) == len(BAD_VKEY_REASONS)


@pytest.mark.parametrize(
    ("vkey", "reason"),
    list(zip(BAD_VKEYS, BAD_VKEY_REASONS, strict=True)),
    ids=["wrong-key-length", "unknown-algorithm"],
)
@pytest.mark.parametrize("parser", [NoteVerifier, CosignatureVerifier])
def test_bad_vkey_is_rejected(vkey: str, reason: str, parser: type[NoteVerifier]) -> None:
    with pytest.raises(InvalidInput, match=reason):
        parser.parse(vkey)


def test_bad_vkey_hashes_were_adjusted_so_the_reason_is_the_key() -> None:
    """The vector's key IDs match the (leniently decoded) key, so only the key is wrong."""
    for vkey in BAD_VKEYS:
        name, key_id_hex, material_b64 = vkey.split("+", 2)
        material = binascii.a2b_base64(material_b64)  # lenient, like Go's StdEncoding
        assert hashlib.sha256(name.encode() + b"\n" + material).digest()[:4].hex() == key_id_hex
    # The wrong-length key, re-encoded canonically with its key ID recomputed, is rejected
    # for its length.
    name, _, material_b64 = BAD_VKEYS[0].split("+", 2)
    material = binascii.a2b_base64(material_b64)
    assert (material[0], len(material) - 1) == (0x01, 36)
    key_id = hashlib.sha256(name.encode() + b"\n" + material).digest()[:4]
    canonical = f"{name}+{key_id.hex()}+{base64.b64encode(material).decode()}"
    with pytest.raises(InvalidInput, match="32 bytes, not 36"):
        NoteVerifier.parse(canonical)


# --- malformed notes ------------------------------------------------------------------------

MALFORMED = CASES["go-sumdb-note-malformed"]
MALFORMED_REASONS = [
    "no blank line",  # text only
    "newline-terminated signature lines",  # blank line, no signatures
    "newline-terminated signature lines",  # last signature line has no newline
    "control character",  # U+0001 in the text
    "newline-terminated signature lines",  # "Bad Name", no final newline
    "signature line 2: does not start with an em dash",  # trailing "Unexpected line."
]


def test_malformed_expectation() -> None:
    assert MALFORMED["expect"].startswith("reject as malformed")
    assert len(MALFORMED["bad_notes"]) == len(MALFORMED_REASONS)


@pytest.mark.parametrize(
    ("note", "reason"),
    list(zip(MALFORMED["bad_notes"], MALFORMED_REASONS, strict=True)),
    ids=[
        "no-signatures",
        "blank-line-only",
        "no-final-newline",
        "control-character",
        "bad-name-no-final-newline",
        "unexpected-line",
    ],
)
def test_malformed_note_is_rejected(note: str, reason: str) -> None:
    verifiers = [NoteVerifier.parse(vkey) for vkey in MALFORMED["vkeys"]]
    with pytest.raises(MalformedNote, match=reason):
        open_note(note.encode("utf-8"), verifiers=verifiers)


def test_bad_name_is_malformed_even_with_a_final_newline() -> None:
    """The vector's "Bad Name" note also lacks its final newline; test the name alone."""
    verifiers = [NoteVerifier.parse(vkey) for vkey in MALFORMED["vkeys"]]
    note = MALFORMED["bad_notes"][4] + "\n"
    with pytest.raises(MalformedNote, match="signature line 1"):
        open_note(note.encode("utf-8"), verifiers=verifiers)


# --- too many signatures --------------------------------------------------------------------

TWO_SIGNERS = CASES["go-sumdb-note-two-signers"]
PETER_LINE: str = TWO_SIGNERS["note"].splitlines(keepends=True)[-2]


def many_signatures(count: int) -> bytes:
    text: str = TWO_SIGNERS["text"]
    return (text + "\n" + PETER_LINE * count).encode("utf-8")


def test_too_many_signatures_is_malformed() -> None:
    case = CASES["go-sumdb-note-too-many-sigs"]
    assert "101 copies" in case["note_pattern"]
    assert PETER_LINE.startswith("\u2014 PeterNeumann ")
    assert MAX_SIGNATURES == 100
    peter = NoteVerifier.parse(TWO_SIGNERS["vkeys"][0])
    with pytest.raises(MalformedNote, match=f"more than {MAX_SIGNATURES} signature lines"):
        open_note(many_signatures(101), verifiers=[peter])


@pytest.mark.parametrize("count", [2, 16, MAX_SIGNATURES])
def test_repeated_signatures_up_to_the_limit_are_accepted(count: int) -> None:
    # C2SP signed-note: verifiers MUST accept at least 16 signatures.
    peter = NoteVerifier.parse(TWO_SIGNERS["vkeys"][0])
    opened = open_note(many_signatures(count), verifiers=[peter])
    assert opened.text == TWO_SIGNERS["text"]
    assert len(opened.verified) == 1


# --- vkeys only (transparency-dev/formats) --------------------------------------------------

VKEYS_ONLY = VECTORS["vkeys_only"]


@pytest.mark.parametrize(
    "vkey", [v["vkey"] for v in VKEYS_ONLY["valid"]], ids=["type-0x01", "type-0x04"]
)
def test_witness_vkey_parses_as_cosignature_verifier(vkey: str) -> None:
    name, key_id_hex, material_b64 = vkey.split("+", 2)
    material = base64.b64decode(material_b64)
    verifier = CosignatureVerifier.parse(vkey)
    assert isinstance(verifier, CosignatureVerifier)
    assert verifier.name == name
    assert verifier.public_key == material[1:]
    # A cosignature/v1 key ID is always computed with type 0x04.
    expected_id = hashlib.sha256(name.encode() + b"\n\x04" + material[1:]).digest()[:4]
    assert verifier.key_id == expected_id
    # The generic parser keeps the vkey's own type.
    generic = NoteVerifier.parse(vkey)
    assert generic.verifier_key() == vkey
    assert generic.key_id.hex() == key_id_hex
    if material[0] == 0x04:
        assert type(generic) is CosignatureVerifier
        assert generic == verifier
        assert verifier.verifier_key() == vkey
    else:
        assert material[0] == 0x01
        assert type(generic) is NoteVerifier
        assert generic != verifier
        assert verifier.key_id != generic.key_id


@pytest.mark.parametrize(
    "vkey", VKEYS_ONLY["invalid"], ids=["two-parts", "not-base64", "invalid-algorithm"]
)
@pytest.mark.parametrize("parser", [NoteVerifier, CosignatureVerifier])
def test_invalid_witness_vkey_is_rejected(vkey: str, parser: type[NoteVerifier]) -> None:
    with pytest.raises(InvalidInput):
        parser.parse(vkey)


# --- cosignature timestamps -----------------------------------------------------------------

TIMESTAMP = VECTORS["cosignature_timestamp"]


def test_cosignature_timestamp_is_decoded() -> None:
    raw = base64.b64decode(TIMESTAMP["signature_base64"])
    assert len(raw) == 76
    assert cosignature_timestamp(raw[4:]) == TIMESTAMP["expect_timestamp"]


def test_plain_signature_has_no_cosignature_timestamp() -> None:
    assert TIMESTAMP["expect_non_cosig"].startswith("reject")
    raw = base64.b64decode(TIMESTAMP["non_cosig_signature_base64"])
    assert len(raw) == 68
    with pytest.raises(MalformedNote, match="72 bytes, not 64"):
        cosignature_timestamp(raw[4:])
