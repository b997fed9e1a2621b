"""The HTTP service: an app factory over the library. Thin by design."""

from __future__ import annotations

from ._peer import client_certificate_protocol
from ._runtime import STOP_SIGNALS, ServiceStore, run_server, service_app, settle_heap
from .app import create_app

__all__ = [
    "STOP_SIGNALS",
    "ServiceStore",
    "client_certificate_protocol",
    "create_app",
    "run_server",
    "service_app",
    "settle_heap",
]
