"""The SCITT commands as a user runs them against a real service on loopback: onboard, sign,
submit, fetch the keys, verify offline; tampering caught region by region; one-line errors."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization

from sealtrail.client import Client
from sealtrail.keys import (
    ES256,
    EcdsaSigner,
    Ed25519Signer,
    Signer,
    generate_signer,
    write_private_key,
)
from sealtrail.merkle import leaf_hash
from sealtrail.scitt import (
    MAX_STATEMENT_SIZE,
    Header,
    add_receipts,
    cose_key,
    decode_sign1,
    encode_key_set,
    key_id,
    parse_statement,
    sign1,
    sign_statement,
    split_transparent,
)
from tests._cli_inproc import Cli, assert_clean_error, in_process
from tests.unit.scitt._pki import make_ca

from ._scitt_live import (
    ADMIN_TOKEN,
    ISSUER,
    ORIGIN,
    SERVICE,
    LiveService,
    closed_port_url,
    live_service,
    record_with_keys,
    signed,
)

PEM = serialization.Encoding.PEM
SPKI = serialization.PublicFormat.SubjectPublicKeyInfo
TEST_TYPE = "application/vnd.sealtrail.test+cbor"


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Cli:
    """``sealtrail ARGS...`` in this process, run from ``tmp_path``."""
    return in_process(
        capsys, monkeypatch, tmp_path, unset=("SEALTRAIL_URL", "SEALTRAIL_ADMIN_TOKEN")
    )


def write_key(path: Path, signer: Signer) -> Path:
    assert isinstance(signer, EcdsaSigner | Ed25519Signer)
    write_private_key(path, signer)
    return path


def write_token(path: Path, token: str = ADMIN_TOKEN) -> Path:
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def live() -> Iterator[LiveService]:
    """One onboarded service for the tests that do not change the organization."""
    with live_service() as service:
        yield service


@dataclass
class Material:
    """Files a user holds: signing key and chain, trust anchor, the service's keys."""

    dir: Path
    key: Path
    chain: Path
    anchor: Path
    keys: Path


@pytest.fixture
def material(live: LiveService, tmp_path: Path) -> Material:
    issuer = live.issuer
    chain = tmp_path / "chain.pem"
    chain.write_bytes(issuer.leaf.public_bytes(PEM) + issuer.ca.public_bytes(PEM))
    anchor = tmp_path / "ca.pem"
    anchor.write_bytes(issuer.ca.public_bytes(PEM))
    keys = tmp_path / "keys.cbor"
    with Client(live.url) as client:
        keys.write_bytes(client.service_keys())
    return Material(
        tmp_path, write_key(tmp_path / "leaf.pem", issuer.leaf_key), chain, anchor, keys
    )


def sign_args(m: Material, payload: str, out: str, *extra: str) -> list[str]:
    return [
        "statement",
        "sign",
        "--key",
        str(m.key),
        "--x5chain",
        str(m.chain),
        "--issuer",
        ISSUER,
        "--subject",
        "urn:maker:device:cli",
        "--content-type",
        "application/json",
        payload,
        "-o",
        out,
        *extra,
    ]


# -- the whole flow ---------------------------------------------------------------------------


def test_onboard_sign_submit_fetch_keys_verify(cli: Cli, tmp_path: Path) -> None:
    with live_service(onboard=False) as service:
        issuer = service.issuer
        (tmp_path / "org.json").write_bytes(record_with_keys(issuer, []))
        token = write_token(tmp_path / "admin.token")
        put = cli("org", "put", "org.json", "--url", service.url, "--token-file", token)
        assert put.code == 0, put.err
        assert "organization maker: entry " in put.out and "at index 0" in put.out

        write_key(tmp_path / "leaf.pem", issuer.leaf_key)
        (tmp_path / "chain.pem").write_bytes(
            issuer.leaf.public_bytes(PEM) + issuer.ca.public_bytes(PEM)
        )
        (tmp_path / "ca.pem").write_bytes(issuer.ca.public_bytes(PEM))
        (tmp_path / "device.json").write_text('{"serial": "CLI-1"}')
        signing = cli(
            "statement",
            "sign",
            "--key",
            "leaf.pem",
            "--x5chain",
            "chain.pem",
            "--issuer",
            ISSUER,
            "--subject",
            "urn:maker:device:cli-1",
            "--content-type",
            "application/json",
            "device.json",
            "-o",
            "device.cose",
        )
        assert signing.code == 0, signing.err
        statement = (tmp_path / "device.cose").read_bytes()
        entry = hashlib.sha256(statement).hexdigest()
        assert entry in signing.err

        submitted = cli("submit", "device.cose", "--url", service.url)
        assert submitted.code == 0, submitted.err
        assert submitted.out == entry + "\n"
        transparent = tmp_path / "device.transparent.cose"
        assert split_transparent(transparent.read_bytes())[0] == statement

        fetched = cli("fetch-keys", "--url", service.url, "-o", "keys.cbor")
        assert fetched.code == 0, fetched.err
        assert fetched.out.split()[1] == ES256

        # With the keys pinned, submit checks the receipt before saving it.
        pinned = cli(
            "submit",
            "device.cose",
            "--url",
            service.url,
            "--service-keys",
            "keys.cbor",
            "-o",
            "pinned.cose",
        )
        assert pinned.code == 0 and "receipt verified with keys.cbor" in pinned.err, pinned.err
        assert split_transparent((tmp_path / "pinned.cose").read_bytes())[0] == statement
        other = encode_key_set([EcdsaSigner.generate().verifier()])
        (tmp_path / "other-keys.cbor").write_bytes(other)
        refused = cli(
            "submit",
            "device.cose",
            "--url",
            service.url,
            "--service-keys",
            "other-keys.cbor",
            "-o",
            "refused.cose",
        )
        assert refused.code == 1 and "does not verify" in refused.err, refused.err
        assert "Traceback" not in refused.err and not (tmp_path / "refused.cose").exists()

    # Offline from here: the service is gone.
    ok = cli("verify", transparent, "--service-keys", "keys.cbor", "--trust-anchor", "ca.pem")
    assert ok.code == 0, ok.err
    lines = ok.out.splitlines()
    assert lines[0] == "OK"
    assert f"entry id   {entry}" in lines
    assert f"issuer     {ISSUER}" in lines
    assert "subject    urn:maker:device:cli-1" in lines
    assert any("validated to a --trust-anchor" in line for line in lines)
    assert f"receipt    leaf index 1, tree size 2, log {ORIGIN}, service {SERVICE}" in lines
    assert "warning" not in ok.err

    as_json = cli(
        "verify", transparent, "--service-keys", "keys.cbor", "--trust-anchor", "ca.pem", "--json"
    )
    doc = json.loads(as_json.out)
    assert doc["ok"] is True and doc["entry_id"] == entry
    assert doc["signature_check"] == "x5chain+anchors"
    assert doc["receipts"][0]["leaf_index"] == 1 and doc["receipts"][0]["tree_size"] == 2

    # Without anchors the chain is not validated, and the command says so.
    loose = cli("verify", transparent, "--service-keys", "keys.cbor")
    assert loose.code == 0 and "NOT validated" in loose.err


def test_a_hash_envelope_statement_from_stdin(
    cli: Cli, live: LiveService, material: Material, monkeypatch: pytest.MonkeyPatch
) -> None:
    firmware = os.urandom(100_000)  # far over the organization's 16 KiB statement limit
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(firmware)))
    args = sign_args(material, "-", "fw.cose", "--hash-envelope", "sha-256")
    args[args.index("application/json")] = TEST_TYPE
    signing = cli(*args, "--location", "https://maker.example/fw.bin")
    assert signing.code == 0, signing.err
    statement = parse_statement((material.dir / "fw.cose").read_bytes())
    assert statement.payload == hashlib.sha256(firmware).digest()
    assert statement.content_type == TEST_TYPE
    assert statement.message.protected[Header.PAYLOAD_HASH_ALG] == -16
    assert statement.message.protected[Header.PAYLOAD_LOCATION] == "https://maker.example/fw.bin"

    result = cli("submit", "fw.cose", "--url", live.url, "--json", "-o", "fw.ts.cose")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["entry_id"] == statement.entry_id
    assert isinstance(doc["index"], int) and doc["transparent_statement"] == "fw.ts.cose"
    ok = cli("verify", "fw.ts.cose", "--service-keys", material.keys, "--trust-anchor", "ca.pem")
    assert ok.code == 0, ok.err


def test_a_payload_is_read_no_further_than_its_limit(cli: Cli, material: Material) -> None:
    """Carried whole, a payload is read up to the statement limit and no further (an endless
    input is refused at once); hashed, a file is read in chunks, never held whole."""
    refused = cli(*sign_args(material, "/dev/zero", "zero.cose"))
    assert refused.code == 1 and "(too-large)" in refused.err and "--hash-envelope" in refused.err
    assert not (material.dir / "zero.cose").exists()
    over = material.dir / "over.bin"
    over.write_bytes(b"x" * (MAX_STATEMENT_SIZE + 1))
    assert "(too-large)" in cli(*sign_args(material, str(over), "over.cose")).err
    firmware = material.dir / "fw.bin"
    firmware.write_bytes(os.urandom(3 * 1024 * 1024 + 5))  # over several read chunks
    hashed = cli(*sign_args(material, str(firmware), "fw.cose", "--hash-envelope", "sha-384"))
    assert hashed.code == 0, hashed.err
    statement = parse_statement((material.dir / "fw.cose").read_bytes())
    assert statement.payload == hashlib.sha384(firmware.read_bytes()).digest()


def test_a_kid_signed_statement_is_checked_with_the_issuer_key(
    cli: Cli, live: LiveService, material: Material
) -> None:
    kid_key = live.kid_keys[0]
    write_key(material.dir / "kid.pem", kid_key)
    (material.dir / "kid.pub.pem").write_bytes(kid_key.public_key().public_bytes(PEM, SPKI))
    (material.dir / "p.json").write_text("{}")
    signing = cli(
        "statement",
        "sign",
        "--key",
        "kid.pem",
        "--issuer",
        ISSUER,
        "--subject",
        "urn:maker:device:kid",
        "--content-type",
        "application/json",
        "p.json",
        "-o",
        "kid.cose",
    )
    assert signing.code == 0, signing.err
    assert cli("submit", "kid.cose", "--url", live.url).code == 0
    keys = material.keys

    ok = cli(
        "verify", "kid.transparent.cose", "--service-keys", keys, "--issuer-key", "kid.pub.pem"
    )
    assert ok.code == 0, ok.err
    assert "signature  checked with --issuer-key" in ok.out

    unchecked = cli("verify", "kid.transparent.cose", "--service-keys", keys)
    assert unchecked.code == 0 and "warning" in unchecked.err and "NOT checked" in unchecked.err

    anchors_only = cli(
        "verify", "kid.transparent.cose", "--service-keys", keys, "--trust-anchor", "ca.pem"
    )
    assert_clean_error(anchors_only, "statement-no-x5chain")

    other = generate_signer(ES256)
    (material.dir / "other.pub.pem").write_bytes(other.public_key().public_bytes(PEM, SPKI))
    wrong = cli(
        "verify", "kid.transparent.cose", "--service-keys", keys, "--issuer-key", "other.pub.pem"
    )
    assert_clean_error(wrong, "statement-wrong-key")


# -- tampering ----------------------------------------------------------------------------------


@pytest.fixture
def transparent(cli: Cli, live: LiveService, material: Material) -> Path:
    """A registered statement's transparent form, in a tree of more than one leaf."""
    (material.dir / "t.json").write_text('{"serial": "TAMPER"}')
    assert cli(*sign_args(material, "t.json", "t.cose")).code == 0
    result = cli("submit", "t.cose", "--url", live.url)
    assert result.code == 0, result.err
    return material.dir / "t.transparent.cose"


def _regions(data: bytes) -> dict[str, bytes]:
    """The bytes of each region of a transparent statement, found by decoding it."""
    statement, receipts = split_transparent(data)
    s = decode_sign1(statement)
    r = decode_sign1(receipts[0])
    proof = cbor2.loads(r.unprotected[Header.VDP][-1][0])
    assert s.payload is not None and proof[2], "a tree of one leaf has no path to tamper with"
    return {
        "statement payload": s.payload,
        "statement signature": s.signature,
        "receipt inclusion proof": proof[2][0],
        "receipt signature": r.signature,
    }


def _flip_in(data: bytes, region: bytes) -> bytes:
    assert data.count(region) == 1
    at = data.index(region) + len(region) // 2
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


@pytest.mark.parametrize(
    ("region", "code", "says"),
    [
        ("statement payload", "statement-bad-signature", "the statement's signature"),
        ("statement signature", "statement-bad-signature", "the statement's signature"),
        ("receipt inclusion proof", "receipt-bad-signature", "receipt 1: "),
        ("receipt signature", "receipt-bad-signature", "receipt 1: "),
    ],
)
def test_a_byte_changed_in_any_region_fails_verification(
    cli: Cli, material: Material, transparent: Path, region: str, code: str, says: str
) -> None:
    data = transparent.read_bytes()
    tampered = material.dir / "tampered.cose"
    tampered.write_bytes(_flip_in(data, _regions(data)[region]))
    args = ["--service-keys", material.keys, "--trust-anchor", material.anchor]
    assert cli("verify", transparent, *args).code == 0
    result = cli("verify", tampered, *args)
    line = assert_clean_error(result, code)
    assert says in line
    assert "OK" not in result.out


def test_a_receipt_from_another_service_fails(
    cli: Cli, material: Material, transparent: Path
) -> None:
    (material.dir / "other.cbor").write_bytes(encode_key_set([generate_signer(ES256).verifier()]))
    result = cli("verify", transparent, "--service-keys", "other.cbor")
    assert_clean_error(result, "receipt-unknown-key")


def test_a_receipt_from_a_service_with_scrapi_style_keys_verifies(cli: Cli, tmp_path: Path) -> None:
    """Another SCITT service's key set as SCRAPI's example shows it: kids of its choosing
    (``'kid1'``), no ``alg``; its receipt names its key by that kid."""
    service = generate_signer(ES256)
    statement = sign_statement(
        generate_signer(ES256),
        issuer="https://other.example",
        subject="urn:other:1",
        content_type="application/json",
        payload=b"{}",
    )
    entries = [hashlib.sha256(b"first").digest(), hashlib.sha256(statement).digest()]
    leaves = [leaf_hash(e) for e in entries]
    root = hashlib.sha256(b"\x01" + leaves[0] + leaves[1]).digest()
    receipt = sign1(
        service,
        protected={Header.KID: b"kid1", Header.VDS: 1},
        unprotected={Header.VDP: {-1: [cbor2.dumps([2, 1, [leaves[0]]])]}},
        payload=root,
        detached=True,
    )
    (tmp_path / "ts.cose").write_bytes(add_receipts(statement, [receipt]))
    key = {k: v for k, v in cose_key(service.verifier()).items() if k not in (2, 3)}
    (tmp_path / "keys.cbor").write_bytes(cbor2.dumps([{**key, 2: b"kid1"}]))
    result = cli("verify", "ts.cose", "--service-keys", "keys.cbor")
    assert result.code == 0, result.err
    assert result.out.startswith("OK")
    # The same receipt naming its key by the thumbprint as a text string (as RFC 9942's
    # examples write kids) is refused, saying why.
    text_kid = sign1(
        service,
        protected={Header.KID: key_id(service.verifier()).hex(), Header.VDS: 1},
        unprotected={Header.VDP: {-1: [cbor2.dumps([2, 1, [leaves[0]]])]}},
        payload=root,
        detached=True,
    )
    (tmp_path / "text.cose").write_bytes(add_receipts(statement, [text_kid]))
    line = assert_clean_error(
        cli("verify", "text.cose", "--service-keys", "keys.cbor"), "receipt-unknown-key"
    )
    assert "text string" in line


def test_a_tampered_statement_fails_in_a_real_process(
    material: Material, transparent: Path
) -> None:
    data = transparent.read_bytes()
    (material.dir / "bad.cose").write_bytes(_flip_in(data, _regions(data)["receipt signature"]))
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "sealtrail", "verify", "bad.cose", "--service-keys", "keys.cbor"],
        cwd=material.dir,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error (receipt-bad-signature): receipt 1: "), result.stderr
    assert "Traceback" not in result.stderr


# -- output files and bad input -----------------------------------------------------------------


def test_submit_never_overwrites_without_force(
    cli: Cli, live: LiveService, material: Material, transparent: Path
) -> None:
    before = transparent.read_bytes()
    again = cli("submit", "t.cose", "--url", live.url)
    assert_clean_error(again, "file-exists")
    assert transparent.read_bytes() == before
    forced = cli("submit", "t.cose", "--url", live.url, "--force")
    assert forced.code == 0, forced.err
    assert split_transparent(transparent.read_bytes())[0] == (material.dir / "t.cose").read_bytes()
    assert_clean_error(cli(*sign_args(material, "t.json", "t.cose")), "file-exists")
    assert_clean_error(cli("fetch-keys", "--url", live.url, "-o", material.keys), "file-exists")
    assert not [p.name for p in material.dir.iterdir() if p.name.endswith(".tmp")]


@dataclass
class Ctx:
    """What a bad-input case may refer to."""

    m: Material
    url: str
    ts: Path
    down: str


def _sign(c: Ctx, *changes: str) -> list[str | Path]:
    """``statement sign`` with good arguments, except for ``changes`` (option, value)."""
    args: dict[str, str | Path] = {
        "--key": c.m.key,
        "--x5chain": c.m.chain,
        "--issuer": ISSUER,
        "--subject": "urn:maker:device:bad",
        "--content-type": "application/json",
        "-o": "out.cose",
    }
    payload: str | Path = "p.json"
    pairs = list(changes)
    for option, value in zip(pairs[::2], pairs[1::2], strict=True):
        if option == "PAYLOAD":
            payload = value
        else:
            args[option] = value
    return ["statement", "sign", *[x for kv in args.items() for x in kv], payload]


def _verify(c: Ctx, *changes: str) -> list[str | Path]:
    args: dict[str, str | Path] = {"--service-keys": c.m.keys}
    target: str | Path = c.ts
    pairs = list(changes)
    for option, value in zip(pairs[::2], pairs[1::2], strict=True):
        if option == "FILE":
            target = value
        else:
            args[option] = value
    return ["verify", target, *[x for kv in args.items() for x in kv]]


BAD: list[tuple[str, Callable[[Ctx], list[str | Path]], str]] = [
    (
        "submit: missing file",
        lambda c: ["submit", "missing.cose", "--url", c.url],
        "file-not-found",
    ),
    ("submit: not COSE", lambda c: ["submit", "garbage.bin", "--url", c.url], "cbor-malformed"),
    (
        "submit: a transparent statement",
        lambda c: ["submit", c.ts, "--url", c.url, "-o", "x.cose"],
        "statement-unprotected-header",
    ),
    ("submit: not a URL", lambda c: ["submit", "good.cose", "--url", "nowhere"], "url-invalid"),
    (
        "submit: service down",
        lambda c: ["submit", "good.cose", "--url", c.down],
        "service-unreachable",
    ),
    ("submit: bad timeout", lambda c: ["submit", "good.cose", "--timeout", "0"], "invalid-input"),
    (
        "fetch-keys: service down",
        lambda c: ["fetch-keys", "--url", c.down, "-o", "k.cbor"],
        "service-unreachable",
    ),
    ("sign: missing key", lambda c: _sign(c, "--key", "missing.pem"), "config-error"),
    ("sign: garbage key", lambda c: _sign(c, "--key", "garbage.pem"), "config-error"),
    ("sign: key readable by others", lambda c: _sign(c, "--key", "open.pem"), "config-error"),
    ("sign: garbage chain", lambda c: _sign(c, "--x5chain", "garbage.bin"), "bad-certificate"),
    (
        "sign: chain of another key",
        lambda c: _sign(c, "--x5chain", "rogue-ca.pem"),
        "invalid-input",
    ),
    ("sign: missing payload", lambda c: _sign(c, "PAYLOAD", "missing.json"), "file-not-found"),
    ("sign: empty issuer", lambda c: _sign(c, "--issuer", ""), "statement-bad-claims"),
    ("sign: location, no envelope", lambda c: _sign(c, "--location", "x:y"), "invalid-input"),
    ("verify: not COSE", lambda c: _verify(c, "FILE", "garbage.bin"), "statement-malformed"),
    ("verify: missing file", lambda c: _verify(c, "FILE", "none.cose"), "file-not-found"),
    (
        "verify: garbage keys",
        lambda c: _verify(c, "--service-keys", "garbage.bin"),
        "cbor-malformed",
    ),
    ("verify: missing keys", lambda c: _verify(c, "--service-keys", "none.cbor"), "file-not-found"),
    (
        "verify: garbage anchor",
        lambda c: _verify(c, "--trust-anchor", "garbage.bin"),
        "bad-certificate",
    ),
    (
        "verify: another CA",
        lambda c: _verify(c, "--trust-anchor", "rogue-ca.pem"),
        "chain-untrusted",
    ),
    (
        "verify: garbage issuer key",
        lambda c: _verify(c, "--issuer-key", "garbage.bin"),
        "key-malformed",
    ),
    ("org put: no token", lambda c: ["org", "put", "org.json", "--url", c.url], "config-error"),
    (
        "org put: token readable by others",
        lambda c: ["org", "put", "org.json", "--url", c.url, "--token-file", "open.token"],
        "config-error",
    ),
    (
        "org put: wrong token",
        lambda c: ["org", "put", "org.json", "--url", c.url, "--token-file", "wrong.token"],
        "token-unknown",
    ),
    (
        "org put: not a record",
        lambda c: ["org", "put", "garbage.json", "--url", c.url, "--token-file", "good.token"],
        "org-record-invalid",
    ),
]


@pytest.mark.parametrize(("name", "make", "code"), BAD, ids=[case[0] for case in BAD])
def test_bad_input_is_one_line_and_exit_1(
    cli: Cli,
    live: LiveService,
    material: Material,
    transparent: Path,
    name: str,
    make: Callable[[Ctx], list[str | Path]],
    code: str,
) -> None:
    d = material.dir
    (d / "garbage.bin").write_bytes(b"hello, world")
    (d / "garbage.pem").write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n")
    (d / "garbage.pem").chmod(0o600)
    (d / "open.pem").write_bytes(material.key.read_bytes())
    (d / "open.pem").chmod(0o644)
    (d / "garbage.json").write_text('{"org": "maker"}')
    (d / "org.json").write_bytes(record_with_keys(live.issuer, live.kid_keys, version=99))
    (d / "p.json").write_text("{}")
    write_token(d / "wrong.token", "wrong-token-d34db33f")
    write_token(d / "good.token")
    (d / "open.token").write_text(ADMIN_TOKEN)
    (d / "open.token").chmod(0o644)
    _, rogue_ca = make_ca(cn="Rogue CA")
    (d / "rogue-ca.pem").write_bytes(rogue_ca.public_bytes(PEM))
    (d / "good.cose").write_bytes(signed(live.issuer, subject="urn:maker:device:good"))
    context = Ctx(material, live.url, transparent, closed_port_url())

    result = cli(*make(context))
    assert_clean_error(result, code)
    assert result.out == "", name
    assert "d34db33f" not in result.err and ADMIN_TOKEN not in result.err
    assert not (d / "out.cose").exists() and not (d / "k.cbor").exists()
    if code == "file-not-found":  # a local file: the hint is about the file, not a request
        assert "hint: Check the path" in result.err, result.err
