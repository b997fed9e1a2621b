"""Sealtrail: a tamper-evident provenance ledger for hardware supply chains.

The layers, lowest first (each may import only those before it; tests/unit/test_layering.py
enforces it): ``merkle`` (pure) -> ``errors`` -> ``keys`` -> ``note`` -> ``storage`` -> ``log``
-> ``config`` -> ``service`` -> ``cli``. See ARCHITECTURE.md.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
