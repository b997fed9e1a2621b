"""A transparency service on a real loopback socket, for the client and SCITT CLI tests."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sealtrail.client import Client
from sealtrail.keys import ES256, Ed25519Signer, Signer, generate_signer
from sealtrail.log import CheckpointSigner
from sealtrail.scitt import sign_statement
from sealtrail.storage import MemoryStore
from tests._server import serve_in_thread
from tests.integration.conftest import ADMIN_TOKEN, service_application
from tests.unit.scitt._pki import Issuer, make_issuer
from tests.unit.scitt.conftest import ISSUER, SERVICE, org_record

__all__ = [
    "ADMIN_TOKEN",
    "ISSUER",
    "JSON",
    "ORG",
    "ORIGIN",
    "SERVICE",
    "LiveService",
    "closed_port_url",
    "live_service",
    "record_with_keys",
    "signed",
]

ORIGIN = "live.sealtrail.localhost/test"
ORG = "maker"
JSON = "application/json"


@dataclass
class LiveService:
    """A running service and what it was built with."""

    url: str
    issuer: Issuer
    checkpoint_signer: CheckpointSigner
    service_signer: Signer
    #: Keys registered for the organization by kid (statements without x5chain).
    kid_keys: Sequence[Signer]


def record_with_keys(issuer: Issuer, keys: Sequence[Signer], *, version: int = 1) -> bytes:
    """The test organization's record (tests/unit/scitt/conftest.py) plus registered keys."""
    doc: dict[str, Any] = json.loads(org_record(issuer, version=version))
    doc["keys"] = [
        {"alg": k.algorithm, "public_key": base64.b64encode(k.public_key_bytes()).decode()}
        for k in keys
    ]
    return json.dumps(doc).encode()


@contextmanager
def live_service(*, max_delay: float = 0.001, onboard: bool = True) -> Iterator[LiveService]:
    """A writing service on 127.0.0.1 over a fresh MemoryStore; with ``onboard``, the
    organization "maker" (one CA, one kid key) is registered through the client."""
    issuer = make_issuer(ES256, cn="Maker")
    kid_keys = [generate_signer(ES256)]
    checkpoint_signer = CheckpointSigner(origin=ORIGIN, signer=Ed25519Signer.generate())
    service_signer = generate_signer(ES256)
    store = MemoryStore()
    app = service_application(
        store,
        checkpoint_signer=checkpoint_signer,
        service_signer=service_signer,
        max_delay=max_delay,
    )
    try:
        with serve_in_thread(app) as url:
            live = LiveService(url, issuer, checkpoint_signer, service_signer, kid_keys)
            if onboard:
                with Client(url) as client:
                    client.put_organization(
                        ORG, record_with_keys(issuer, kid_keys), token=ADMIN_TOKEN
                    )
            yield live
    finally:
        store.close()


def signed(who: Issuer, /, **changes: Any) -> bytes:
    """A statement the organization's policy accepts, with ``changes`` to its arguments."""
    args: dict[str, Any] = {
        "issuer": ISSUER,
        "subject": "urn:maker:device:1",
        "content_type": JSON,
        "payload": b'{"serial": "A1"}',
        "x5chain": who.chain,
    }
    args.update(changes)
    return sign_statement(who.leaf_key, **args)


def closed_port_url() -> str:
    """A loopback URL nothing listens on (a port just bound and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
