"""The one way tests reach third-party test vectors (tests/vectors/, origins in its README)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VECTORS = Path(__file__).resolve().parent / "vectors"


def vector_path(*parts: str) -> Path:
    path = VECTORS.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"test vector missing: {path.relative_to(VECTORS)}")
    return path


def load_json(*parts: str) -> Any:
    return json.loads(vector_path(*parts).read_text(encoding="utf-8"))


def json_cases(*parts: str) -> list[tuple[str, Any]]:
    """Every ``*.json`` under a vector folder, as ``(relative name, parsed)`` pairs, sorted."""
    root = vector_path(*parts)
    return [
        (str(p.relative_to(root)), json.loads(p.read_text(encoding="utf-8")))
        for p in sorted(root.rglob("*.json"))
    ]
