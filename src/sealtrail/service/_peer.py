"""The TLS client certificate of a connection, handed to the application.

uvicorn verifies a client's certificate during the handshake (``[server] tls_client_ca``)
but does not pass it on. :func:`client_certificate_protocol` makes a uvicorn HTTP protocol
that does, in the ASGI TLS extension's shape: ``scope["extensions"]["tls"]
["client_cert_chain"]`` holds the client's certificate as PEM (the leaf only: the
handshake already checked the chain). :func:`client_certificate` reads it back as DER.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["client_certificate", "client_certificate_protocol"]


class _WithClientCertificate:
    """``app`` with the connection's client certificate in every request's scope."""

    def __init__(self, app: ASGIApp, pem: str) -> None:
        self.app = app
        self.tls = {"client_cert_chain": [pem]}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            extensions = {**(scope.get("extensions") or {}), "tls": self.tls}
            scope = {**scope, "extensions": extensions}
        await self.app(scope, receive, send)


def client_certificate_protocol(base: type[Any]) -> type[Any]:
    """A subclass of uvicorn's HTTP protocol ``base`` that, on a TLS connection whose client
    sent a certificate, wraps the application to put it in each request's scope."""

    class ClientCertificateProtocol(base):  # type: ignore[misc]
        app: ASGIApp

        def connection_made(self, transport: Any) -> None:  # noqa: ANN401 (uvicorn's)
            super().connection_made(transport)
            tls = transport.get_extra_info("ssl_object")
            der = tls.getpeercert(binary_form=True) if tls is not None else None
            if der:
                self.app = _WithClientCertificate(self.app, ssl.DER_cert_to_PEM_cert(der))

    return ClientCertificateProtocol


def client_certificate(scope: Mapping[str, Any]) -> bytes | None:
    """The DER of the request's TLS client certificate, if its connection sent one."""
    tls = (scope.get("extensions") or {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or ()
    if not chain:
        return None
    try:
        return ssl.PEM_cert_to_DER_cert(chain[0])
    except ValueError:
        return None
