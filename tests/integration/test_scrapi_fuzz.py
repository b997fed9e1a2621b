"""Property-based HTTP fuzzing of the SCRAPI routes: whatever a client sends, the answer is
never a server error, and every refusal is problem details whose ``status`` is the HTTP
status and whose ``code`` is stable.

Bounded: fixed example counts, ``derandomize`` and no example database (the keys, and so
the bytes being mutated, are fresh each run).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import cbor2
import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealtrail.scitt import sign1, verify_transparent_statement
from sealtrail.storage import MemoryStore

from .conftest import COSE, PROBLEM, Service, make_maker, running, statement

FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[Service]:
    """One service for the whole module (hypothesis runs many examples per test)."""
    store = MemoryStore()
    # A bug answers 500 here, as a client would see it, rather than raising in the test.
    with running(store, make_maker(), raise_server_exceptions=False) as svc:
        yield svc
    store.close()


@pytest.fixture(scope="module")
def valid(fuzzed: Service) -> bytes:
    return statement(fuzzed.maker.issuer, payload=b'{"serial": "fuzz"}')


def check_answer(r: httpx2.Response) -> None:
    """Never a server error; every error is problem details with a code and its status."""
    assert r.status_code < 500, (r.status_code, r.text)
    if r.status_code >= 400:
        assert r.headers["content-type"] == PROBLEM, r.headers
        body = r.json()
        assert isinstance(body, dict)
        assert isinstance(body.get("code"), str) and body["code"], body
        assert body["status"] == r.status_code, body
        assert body["type"] == f"urn:sealtrail:error:{body['code']}", body
        assert r.headers.get("cache-control") == "no-store"


def post(svc: Service, data: bytes) -> httpx2.Response:
    r = svc.post(data)
    check_answer(r)
    if r.status_code in (201, 303):
        # Only an exact, valid statement registers; it answers with its own entry.
        assert r.headers["location"] == f"/entries/{hashlib.sha256(data).hexdigest()}"
    if r.status_code == 303:
        # Slower than REGISTER_WAIT (a busy machine): let it finish, so that nothing is in
        # flight when the service stops.
        deadline = time.monotonic() + 15.0
        while svc.client.get(r.headers["location"]).status_code != 200:
            assert time.monotonic() < deadline, "a registration did not finish"
            time.sleep(0.02)
    return r


# -- strategies ----------------------------------------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.floats(allow_nan=False, width=64)
    | st.text(max_size=20)
    | st.binary(max_size=40)
)
_keys = st.integers(min_value=-300, max_value=300) | st.text(max_size=8)
_tags = st.sampled_from([0, 1, 2, 16, 17, 18, 24, 55799]) | st.integers(0, 2**64 - 1)


def _extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return (
        st.lists(children, max_size=6)
        | st.dictionaries(_keys, children, max_size=6)
        | st.builds(cbor2.CBORTag, _tags, children)
    )


#: Any CBOR value (cbor2 may encode some non-deterministically: so much the better).
cbor_values = st.recursive(_scalars, _extend, max_leaves=25)

#: Header labels a statement uses, and some it does not.
_labels = st.sampled_from([1, 2, 3, 4, 15, 33, 34, 258, 259, 260, 394, 395, -1, 0, 65535])


@st.composite
def cose_shaped(draw: st.DrawFn) -> bytes:
    """Tag 18 over four parts that look like a COSE_Sign1 (most of the time)."""
    protected = draw(st.dictionaries(_labels, cbor_values, max_size=6))
    parts: list[Any] = [
        draw(st.just(cbor2.dumps(protected)) | st.binary(max_size=30)),
        draw(st.dictionaries(_labels, cbor_values, max_size=2) | st.just({})),
        draw(st.binary(max_size=60) | st.none() | cbor_values),
        draw(st.binary(min_size=64, max_size=64) | st.binary(max_size=100)),
    ]
    if draw(st.booleans()):
        parts = parts[: draw(st.integers(0, 3))]
    return cbor2.dumps(cbor2.CBORTag(draw(st.sampled_from([18, 18, 18, 17, 98])), parts))


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few byte flips, truncations, insertions and deletions."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "set"]))
        pos = draw(st.integers(0, max(0, len(out) - 1)))
        if kind == "flip" and out:
            out[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del out[pos:]
        elif kind == "insert":
            out[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del out[pos : pos + draw(st.integers(1, 8))]
        elif out:
            out[pos] = draw(st.integers(0, 255))
    return bytes(out)


#: Protected header values a validly signed statement may carry instead of its own.
_header_changes = st.dictionaries(
    _labels.filter(lambda label: label != 1),  # alg follows the key, or the check is trivial
    cbor_values | st.text(max_size=30) | st.binary(max_size=80),
    min_size=1,
    max_size=3,
)


# -- properties ----------------------------------------------------------------------------


@FUZZ
@given(data=st.binary(max_size=300))
def test_random_bytes(fuzzed: Service, data: bytes) -> None:
    post(fuzzed, data)


@FUZZ
@given(value=cbor_values)
def test_random_cbor_structures(fuzzed: Service, value: Any) -> None:
    post(fuzzed, cbor2.dumps(value))


@FUZZ
@given(data=cose_shaped())
def test_cose_shaped_messages(fuzzed: Service, data: bytes) -> None:
    post(fuzzed, data)


@settings(FUZZ, max_examples=300)  # cheap: most mutants fail the CBOR gate
@given(st.data())
def test_mutations_of_a_valid_statement(fuzzed: Service, valid: bytes, data: st.DataObject) -> None:
    bad = data.draw(mutated(valid))
    r = post(fuzzed, bad)
    if bad != valid:
        assert r.status_code >= 400, "a changed statement was registered"


@FUZZ
@given(changes=_header_changes)
def test_validly_signed_statements_with_odd_headers(
    fuzzed: Service, valid: bytes, changes: dict[Any, Any]
) -> None:
    """Past the signature check: the profile, issuer, policy and chain checks see odd values."""
    protected = dict(cbor2.loads(cbor2.loads(valid).value[0]))
    protected.update(changes)
    del protected[1]
    try:
        data = sign1(fuzzed.maker.issuer.leaf_key, protected=protected, payload=b'{"odd": 1}')
    except (ValueError, TypeError, cbor2.CBOREncodeError):
        return  # not encodable: nothing to send
    r = post(fuzzed, data)
    if r.status_code != 201:
        return
    ts = fuzzed.client.get(f"{r.headers['location']}/transparent-statement")
    assert ts.status_code == 200, ts.text
    verified = verify_transparent_statement(ts.content, service_keys=fuzzed.key_set())
    assert verified.entry_id == hashlib.sha256(data).hexdigest()


@FUZZ
@given(
    entry=st.text(max_size=80) | st.text(alphabet="0123456789abcdefABCDEF", max_size=70),
    suffix=st.sampled_from(["", "/statement", "/transparent-statement"]),
)
def test_random_entry_ids(fuzzed: Service, entry: str, suffix: str) -> None:
    r = fuzzed.client.get(f"/entries/{quote(entry, safe='')}{suffix}")
    check_answer(r)
    assert r.status_code in (200, 302, 307, 404, 405), r.status_code


def test_the_fuzzed_service_still_works(fuzzed: Service, valid: bytes) -> None:
    size = fuzzed.log_size()
    r = post(fuzzed, statement(fuzzed.maker.issuer, subject="urn:maker:after-fuzzing"))
    assert r.status_code == 201, r.text
    assert fuzzed.log_size() == size + 1
    assert fuzzed.client.get(f"/entries/{hashlib.sha256(valid).hexdigest()}").status_code in (
        200,
        404,
    )
    assert r.headers["content-type"] == COSE
