"""The HTTP read API: C2SP tlog-tiles paths, caching headers, proofs, problem details."""

from __future__ import annotations

import asyncio
import base64

import cbor2
import pytest
from fastapi.testclient import TestClient

from sealtrail.log import (
    CheckpointSigner,
    ConsistencyProof,
    InclusionProof,
    Sequencer,
    bundle_entries,
    verify_checkpoint,
)
from sealtrail.merkle import leaf_hash
from sealtrail.service import create_app
from sealtrail.storage import MemoryStore
from tests.conftest import reader_for

SIZE = 70_000 // 100  # 700: two full level-0 tiles, one partial, a partial level-1 tile


@pytest.fixture
def client(signer: CheckpointSigner) -> TestClient:
    store = MemoryStore()

    async def fill() -> None:
        async with Sequencer(store, signer=signer) as seq:
            await seq.add_many([f"entry {i}".encode() for i in range(SIZE)])

    asyncio.run(fill())
    app = create_app(reader_for(store, signer), verifier_key=signer.verifier_key())
    return TestClient(app)


def test_checkpoint_is_a_signed_note_with_short_caching(
    client: TestClient, signer: CheckpointSigner
) -> None:
    r = client.get("/checkpoint")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert "max-age=2" in r.headers["cache-control"]
    signed = verify_checkpoint(r.content, origin=signer.origin, verifiers=[signer.verifier])
    assert signed.size == SIZE


def test_log_info_is_never_cached(client: TestClient, signer: CheckpointSigner) -> None:
    r = client.get("/log/v1/info")
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store"  # its size changes with every batch
    assert r.json()["size"] == SIZE


@pytest.mark.parametrize(
    ("path", "length"),
    [
        ("/tile/0/000", 256 * 32),
        ("/tile/0/001", 256 * 32),
        ("/tile/0/002.p/188", 188 * 32),
        ("/tile/0/002.p/10", 10 * 32),  # an older, narrower view of the same tile
        ("/tile/1/000.p/2", 2 * 32),
    ],
)
def test_tiles_are_served_immutable(client: TestClient, path: str, length: int) -> None:
    r = client.get(path)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    assert "immutable" in r.headers["cache-control"]
    assert len(r.content) == length


@pytest.mark.parametrize(
    "path",
    [
        "/tile/0/002",  # not full yet
        "/tile/0/002.p/189",  # wider than the tree
        "/tile/0/003.p/1",
        "/tile/2/000.p/1",
        "/tile/entries/003",
        "/tile/0/2",  # not 3 digits
        "/tile/0/x000/002",  # leading group of zeros
        "/tile/0/000.p/256",
        "/tile/0/000.p/0",
        "/tile/64/000",
        "/tile/-1/000",
    ],
)
def test_missing_or_malformed_tiles_are_404_problems(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404, (path, r.status_code, r.text)
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "not-found"
    assert "immutable" not in r.headers.get("cache-control", "")


def test_entry_bundles_hash_to_level0_tiles(client: TestClient) -> None:
    for path, tile in [("000", "000"), ("002.p/188", "002.p/188")]:
        bundle = bundle_entries(client.get(f"/tile/entries/{path}").content)
        hashes = client.get(f"/tile/0/{tile}").content
        assert [leaf_hash(e) for e in bundle] == [
            hashes[i : i + 32] for i in range(0, len(hashes), 32)
        ]


def test_bundles_are_gzipped_when_asked(client: TestClient) -> None:
    r = client.get("/tile/entries/000", headers={"accept-encoding": "gzip"})
    assert r.headers.get("content-encoding") == "gzip"


def test_inclusion_proof_route_verifies(client: TestClient, signer: CheckpointSigner) -> None:
    root = verify_checkpoint(
        client.get("/checkpoint").content, origin=signer.origin, verifiers=[signer.verifier]
    ).root
    for index in (0, 255, 256, 511, SIZE - 1):
        proof = InclusionProof.from_dict(
            client.get(f"/log/v1/proof/inclusion?index={index}").json()
        )
        proof.verify(root)
        assert client.get(f"/log/v1/entries/{index}").content == f"entry {index}".encode()
    by_hash = client.get(f"/log/v1/proof/inclusion?leaf_hash={leaf_hash(b'entry 5').hex()}").json()
    assert by_hash["index"] == 5


def test_consistency_proof_route_verifies(client: TestClient) -> None:
    old = InclusionProof.from_dict(client.get("/log/v1/proof/inclusion?index=0&size=300").json())
    from sealtrail.merkle import root_from_inclusion_proof

    root300 = root_from_inclusion_proof(
        leaf_hash=old.leaf_hash, index=0, size=300, proof=old.hashes
    )
    latest = InclusionProof.from_dict(client.get("/log/v1/proof/inclusion?index=0").json())
    root = root_from_inclusion_proof(
        leaf_hash=latest.leaf_hash, index=0, size=SIZE, proof=latest.hashes
    )
    proof = ConsistencyProof.from_dict(client.get("/log/v1/proof/consistency?size1=300").json())
    proof.verify(root300, root)


@pytest.mark.parametrize(
    ("url", "status", "code"),
    [
        ("/log/v1/proof/inclusion?index=700", 404, "not-found"),
        ("/log/v1/proof/inclusion?index=-1", 400, "invalid-input"),
        ("/log/v1/proof/inclusion?index=abc", 400, "invalid-input"),
        ("/log/v1/proof/inclusion", 400, "invalid-input"),
        ("/log/v1/proof/inclusion?index=1&leaf_hash=00", 400, "invalid-input"),
        ("/log/v1/proof/inclusion?leaf_hash=zz", 400, "invalid-input"),
        ("/log/v1/proof/inclusion?leaf_hash=" + "00" * 32, 404, "not-found"),
        ("/log/v1/proof/inclusion?index=1&size=701", 404, "not-found"),
        ("/log/v1/proof/consistency?size1=701", 404, "not-found"),
        ("/log/v1/entries/700", 404, "not-found"),
        ("/no/such/route", 404, "not-found"),
    ],
)
def test_bad_requests_get_problem_details(
    client: TestClient, url: str, status: int, code: str
) -> None:
    r = client.get(url)
    assert r.status_code == status, r.text
    body = r.json()
    assert r.headers["content-type"] == "application/problem+json"
    assert body["code"] == code and body["status"] == status and body["type"].endswith(code)


def test_empty_log_has_no_checkpoint(signer: CheckpointSigner) -> None:
    client = TestClient(
        create_app(reader_for(MemoryStore(), signer), verifier_key=signer.verifier_key())
    )
    assert client.get("/checkpoint").status_code == 404
    assert client.get("/log/v1/info").json()["size"] == 0


def test_info_publishes_the_verifier_key(client: TestClient, signer: CheckpointSigner) -> None:
    info = client.get("/log/v1/info").json()
    assert info["verifier_key"] == signer.verifier_key()
    assert info["origin"] == signer.origin
    key = info["verifier_key"].split("+", 2)[2]  # base64 may contain "+"
    assert len(base64.b64decode(key)) == 33


@pytest.mark.parametrize(
    "path", ["/checkpoint", "/tile/0/000", "/tile/0/002.p/188", "/tile/entries/000"]
)
def test_head_answers_as_get_without_the_body(client: TestClient, path: str) -> None:
    """tlog-tiles clients and caches ask with HEAD whether a tile or a checkpoint is there."""
    get, head = client.get(path), client.head(path)
    assert head.status_code == get.status_code == 200
    assert head.content == b""
    for name in ("content-type", "content-length", "cache-control"):
        assert head.headers[name] == get.headers[name]


def test_head_of_a_missing_tile_is_404_and_other_routes_do_not_serve_it(
    client: TestClient,
) -> None:
    assert client.head("/tile/0/003").status_code == 404
    r = client.head("/log/v1/info")
    assert r.status_code == 405
    assert "GET" in r.headers["allow"]


def test_the_log_alone_negotiates_its_problem_details_too(client: TestClient) -> None:
    """A read-only server answers the SCRAPI paths 501; a SCRAPI client (no JSON in its
    Accept) reads that in CBOR (RFC 9290), as it would any SCRAPI error, while the log's own
    routes answer CBOR only to a request that prefers it (docs/scitt.md "Errors")."""
    concise = "application/concise-problem-details+cbor"
    for path in ("/entries", "/.well-known/scitt-keys/" + "00" * 32):
        r = client.get(path, headers={"Accept": "application/cbor"})
        assert r.status_code == 501
        assert r.headers["content-type"] == concise
        assert r.headers["vary"] == "Accept"
        body = cbor2.loads(r.content)
        assert body[7807] == {
            0: "urn:sealtrail:error:read-only-server",
            1: 501,
            "code": "read-only-server",
        }
        assert isinstance(body[-1], str) and isinstance(body[-2], str)
        assert client.get(path).headers["content-type"] == "application/problem+json"
    assert (
        client.get("/tile/0/999", headers={"Accept": "application/cbor"}).headers["content-type"]
        == "application/problem+json"
    )
    r = client.get("/tile/0/999", headers={"Accept": concise})
    assert r.status_code == 404 and r.headers["content-type"] == concise
    assert cbor2.loads(r.content)[7807]["code"] == "not-found"
