"""sealtrail.merkle is pure: stdlib only, nothing else of ours, no I/O, clock or randomness."""

from __future__ import annotations

import ast
from pathlib import Path

import sealtrail.merkle

PACKAGE = Path(sealtrail.merkle.__file__).resolve().parent

ALLOWED_MODULES = {
    "__future__",
    "base64",
    "binascii",
    "collections",
    "collections.abc",
    "dataclasses",
    "hashlib",
    "re",
    "typing",
}
FORBIDDEN_NAMES = {"open", "print", "input", "exec", "eval", "compile", "__import__", "breakpoint"}


def sources() -> list[Path]:
    files = sorted(PACKAGE.rglob("*.py"))
    assert files
    return files


def test_imports_only_allowed_stdlib_and_itself() -> None:
    for path in sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name in ALLOWED_MODULES, f"{path.name}: import {alias.name}"
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: within sealtrail.merkle only
                    assert node.level == 1, f"{path.name}: reaches outside the package"
                    continue
                assert node.module in ALLOWED_MODULES, f"{path.name}: from {node.module}"


def test_no_io_builtins() -> None:
    for path in sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Name):
                assert node.id not in FORBIDDEN_NAMES, f"{path.name}:{node.lineno} {node.id}"


def test_public_api_is_exported() -> None:
    for name in sealtrail.merkle.__all__:
        assert hasattr(sealtrail.merkle, name), name
    assert sorted(sealtrail.merkle.__all__) == sorted(
        n for n in vars(sealtrail.merkle) if not n.startswith("_") and n != "annotations"
    )
