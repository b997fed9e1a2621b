"""The HTTP service: an app factory over the library. Thin by design."""

from __future__ import annotations

from ._head import MAX_REQUEST_HEAD
from ._peer import client_certificate_protocol
from ._runtime import (
    STOP_SIGNALS,
    ServiceStore,
    http_protocol,
    run_server,
    server_config,
    service_app,
    settle_heap,
)
from .app import create_app

__all__ = [
    "MAX_REQUEST_HEAD",
    "STOP_SIGNALS",
    "ServiceStore",
    "client_certificate_protocol",
    "create_app",
    "http_protocol",
    "run_server",
    "server_config",
    "service_app",
    "settle_heap",
]
