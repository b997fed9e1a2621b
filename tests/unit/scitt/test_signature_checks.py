"""Statement signatures checked in a worker process: the same verdicts as in place, for
good and forged signatures alike, and in place again when the pool cannot be used."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import pytest

from sealtrail.errors import InvalidSignature, VerificationError
from sealtrail.keys import ED25519, ES256, ES384, generate_signer, parallel
from sealtrail.scitt import Registration, sign_statement

from .conftest import ISSUER, Running

pytestmark = pytest.mark.anyio

JSON = "application/json"


def statement(running: Running, n: int) -> bytes:
    return sign_statement(
        running.issuer.leaf_key,
        issuer=ISSUER,
        subject=f"urn:maker:device:{n}",
        content_type=JSON,
        payload=b'{"serial": "%d"}' % n,
        x5chain=running.issuer.chain,
    )


def forged(data: bytes) -> bytes:
    """The same statement with its signature's last byte changed (the last byte of the
    COSE_Sign1 is the signature's)."""
    return data[:-1] + bytes([data[-1] ^ 0x01])


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Two worker processes (so one for signatures), and the sizes of the chunks sent."""
    monkeypatch.setenv("SEALTRAIL_VERIFY_WORKERS", "2")
    sizes: list[int] = []
    real = parallel.submit

    def counting(fn: Callable[[Any], Any], chunk: Any) -> Any:
        sizes.append(len(chunk))
        return real(fn, chunk)

    monkeypatch.setattr(parallel, "submit", counting)
    yield sizes
    parallel.shutdown()


async def _register_all(running: Running, data: list[bytes]) -> list[object]:
    return await asyncio.gather(
        *(running.service.register(d) for d in data), return_exceptions=True
    )


async def test_concurrent_registrations_are_checked_in_a_worker_with_the_same_verdicts(
    running: Running, sent: list[int]
) -> None:
    data = [statement(running, n) for n in range(40)]
    data = [forged(d) if n % 3 == 0 else d for n, d in enumerate(data)]
    results = await _register_all(running, data)
    assert sum(sent) == len(data)  # every check went to the worker, in chunks
    for n, result in enumerate(results):
        if n % 3 == 0:
            assert isinstance(result, InvalidSignature), result
            assert result.code == "cose-bad-signature"
            assert "does not verify" in result.message
        else:
            assert not isinstance(result, BaseException), result
    registered = {r.entry_id for r in results if isinstance(r, Registration)}
    assert len(registered) == len(data) - len(range(0, 40, 3))
    assert running.service.reader.size() >= len(registered)  # forged ones never reached it


async def test_a_lone_check_is_made_in_place(running: Running, sent: list[int]) -> None:
    await running.service.register(statement(running, 1))
    with pytest.raises(VerificationError) as info:
        await running.service.register(forged(statement(running, 2)))
    assert info.value.code == "cose-bad-signature"
    assert sent == []


async def test_a_broken_pool_means_checks_in_place_with_the_same_verdicts(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEALTRAIL_VERIFY_WORKERS", "2")
    dropped: list[object] = []

    def broken(fn: Callable[[Any], Any], chunk: Any) -> Any:
        future: Future[Any] = Future()
        future.set_exception(BrokenProcessPool("a worker died"))
        return future, "the pool"

    monkeypatch.setattr(parallel, "submit", broken)
    monkeypatch.setattr(parallel, "broke", dropped.append)
    data = [statement(running, n) for n in range(10)]
    data[4] = forged(data[4])
    results = await _register_all(running, data)
    assert dropped  # the broken pool was reported
    assert isinstance(results[4], InvalidSignature)
    assert all(not isinstance(r, BaseException) for n, r in enumerate(results) if n != 4)


async def test_without_workers_every_check_is_in_place(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEALTRAIL_VERIFY_WORKERS", "0")
    monkeypatch.setattr(parallel, "submit", pytest.fail)
    data = [statement(running, n) for n in range(6)]
    data[0] = forged(data[0])
    results = await _register_all(running, data)
    assert isinstance(results[0], InvalidSignature)
    assert all(not isinstance(r, BaseException) for r in results[1:])


# -- what a worker runs -------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", [ES256, ES384, ED25519])
def test_a_worker_accepts_good_signatures_and_names_bad_ones(algorithm: str) -> None:
    signer = generate_signer(algorithm)
    verifier = signer.verifier()
    message = b"Signature1 over a statement" * 80  # ~2 KB, as a statement
    good = signer.sign(message)
    jobs = [
        parallel.job(verifier, signature=good, message=message),
        parallel.job(verifier, signature=good, message=message + b"!"),
        parallel.job(verifier, signature=good[:-1] + bytes([good[-1] ^ 1]), message=message),
    ]
    assert all(job is not None for job in jobs)
    verdicts = parallel.check_signatures([j for j in jobs if j is not None])
    assert verdicts[0] is None
    assert verdicts[1] is not None
    assert "does not verify" in verdicts[1]
    assert verdicts[2] is not None


def test_an_ecdsa_job_carries_the_hash_not_the_message() -> None:
    verifier = generate_signer(ES384).verifier()
    job = parallel.job(verifier, signature=b"s" * 96, message=b"m" * 2000)
    assert job is not None
    assert job[3] == hashlib.sha384(b"m" * 2000).digest()
    assert job[4] is True


def test_a_worker_refuses_a_digest_of_the_wrong_length_or_a_key_that_does_not_load() -> None:
    verifier = generate_signer(ES256).verifier()
    key = verifier.public_key_bytes()
    verdicts = parallel.check_signatures(
        [
            (ES256, key, b"s" * 64, b"too short", True),
            (ES256, b"\x04" + b"\x00" * 64, b"s" * 64, b"d" * 32, True),  # not on the curve
            (ED25519, b"k" * 32, b"s" * 64, b"message", True),  # no digest for Ed25519
        ]
    )
    assert verdicts[0] is not None
    assert "wrong length" in verdicts[0]
    assert verdicts[1] == "the key does not load: InvalidInput"
    assert verdicts[2] is not None


@pytest.mark.parametrize("size", [0, 1, 2047, 2048, 2100, 4094, 4095, 10_000])
def test_hash_holding_gil_is_the_plain_hash(size: int) -> None:
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    assert parallel.hash_holding_gil("sha256", data) == hashlib.sha256(data).digest()
    assert parallel.hash_holding_gil("sha384", data) == hashlib.sha384(data).digest()


def test_signature_workers_leave_a_core_to_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for configured, expected in (("0", 0), ("1", 1), ("2", 1), ("4", 3)):
        monkeypatch.setenv("SEALTRAIL_VERIFY_WORKERS", configured)
        assert parallel.signature_workers() == expected
