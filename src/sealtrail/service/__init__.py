"""The HTTP service: an app factory over the library. Thin by design."""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
