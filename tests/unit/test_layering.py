"""The layout is the architecture: each layer imports only the layers below it.

An AST walk over src/sealtrail (no import side effects). A new top-level module or package
must be added to ALLOWED, which forces a decision about where it sits.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "sealtrail"

#: layer -> the layers of ours it may import. ``sealtrail`` (the root package, which only
#: holds ``__version__``) may be imported by anyone.
ALLOWED: dict[str, set[str]] = {
    "merkle": set(),  # pure: not even errors
    "errors": set(),
    "keys": {"errors"},
    "note": {"errors", "keys"},
    "storage": {"errors"},
    "log": {"errors", "merkle", "keys", "note", "storage"},
    "scitt": {"errors", "merkle", "keys", "note", "storage", "log"},
    "provenance": {"errors", "merkle", "keys", "note", "storage", "log", "scitt"},
    "client": {"errors", "merkle", "keys", "note", "storage", "log", "scitt"},
    # The configuration's provenance policy is checked as the ledger would record it.
    "config": {"errors", "merkle", "keys", "note", "storage", "log", "scitt", "provenance"},
    "service": {
        "errors",
        "merkle",
        "keys",
        "note",
        "storage",
        "log",
        "scitt",
        "provenance",
        "config",
    },
    # The simulator acts as a user would: the public API of the layers a user reaches, never
    # the service's internals (test_sim_uses_the_public_api_only checks "public").
    "sim": {
        "errors",
        "merkle",
        "keys",
        "note",
        "storage",
        "log",
        "scitt",
        "provenance",
        "client",
        "config",
    },
    "cli": {
        "errors",
        "merkle",
        "keys",
        "note",
        "storage",
        "log",
        "scitt",
        "provenance",
        "client",
        "config",
        "service",
        "sim",
    },
    "__main__": {"cli"},
}

#: Never imported by the package (GPL benchmark peer; test-only verifiers).
FORBIDDEN_THIRD_PARTY = {"pymerkle", "sigstore", "scitt_cose", "pytest", "hypothesis"}


def _layer_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 or rel.stem != "__init__" else ""


def _imports(path: Path, *, located: Path | None = None) -> list[tuple[str, int]]:
    """Absolute module names imported by ``path``, relative imports resolved as if the file
    sat at ``located`` (default: where it is)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ["sealtrail", *(located or path).relative_to(SRC).parent.parts]
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            if node.module:
                found.append((".".join([*base, node.module]), node.lineno))
            else:  # "from .. import errors" imports the module sealtrail.errors
                found += [(".".join([*base, alias.name]), node.lineno) for alias in node.names]
    return found


def _violations(layer: str, imports: list[tuple[str, int]]) -> list[str]:
    allowed = ALLOWED.get(layer, set()) | {layer}
    bad = []
    for name, line in imports:
        parts = name.split(".")
        if parts[0] in FORBIDDEN_THIRD_PARTY:
            bad.append(f"line {line}: {name} must never be imported by the package")
        if parts[0] == "sealtrail" and len(parts) > 1 and parts[1] not in allowed:
            bad.append(f"line {line}: {layer or 'sealtrail'} may not import sealtrail.{parts[1]}")
    return bad


MODULES = sorted(SRC.rglob("*.py"))


def test_every_layer_is_known() -> None:
    layers = {_layer_of(p) for p in MODULES} - {""}
    assert layers <= set(ALLOWED), f"new layer(s) {layers - set(ALLOWED)}: add them to ALLOWED"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_respect_layers(path: Path) -> None:
    bad = _violations(_layer_of(path), _imports(path))
    assert not bad, "\n".join(bad)


def test_merkle_is_pure() -> None:
    """merkle/ uses no file, clock, randomness, network or logging."""
    impure = {"os", "io", "time", "random", "secrets", "socket", "logging", "sqlite3", "pathlib"}
    for path in (SRC / "merkle").rglob("*.py"):
        for name, line in _imports(path):
            assert name.split(".")[0] not in impure, f"{path.name}:{line} imports {name}"
            if name.startswith("sealtrail"):
                assert name.startswith("sealtrail.merkle"), f"{path.name}:{line} imports {name}"


def _private_imports(path: Path, *, located: Path | None = None) -> list[str]:
    """Imports from ``path`` (a module of sim/) that reach past another layer's public API:
    a module of ours with an underscore in its dotted path outside sim, or an underscore
    name taken from one of our modules outside sim."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ["sealtrail", *(located or path).relative_to(SRC).parent.parts]
    bad = []
    for node in ast.walk(tree):
        targets: list[tuple[str, str | None]]
        if isinstance(node, ast.Import):
            targets = [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            targets = [(module, alias.name) for alias in node.names]
        else:
            continue
        for module, name in targets:
            parts = module.split(".")
            if parts[0] != "sealtrail" or parts[1:2] == ["sim"]:
                continue
            if any(p.startswith("_") for p in parts[1:]) or (name or "").startswith("_"):
                bad.append(f"line {node.lineno}: {module}{'.' + name if name else ''}")
    return bad


@pytest.mark.parametrize(
    "path", sorted((SRC / "sim").rglob("*.py")), ids=lambda p: str(p.relative_to(SRC))
)
def test_sim_uses_the_public_api_only(path: Path) -> None:
    """sim/ imports what a package exports (``sealtrail.<layer>``), never ``_private``
    modules or names of another layer, as a real user of the library would."""
    bad = _private_imports(path)
    assert not bad, "sim/ must use the public API only:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    ("source", "caught"),
    [
        ("from sealtrail.provenance._evidence import sign_evidence\n", True),
        ("from sealtrail.provenance import _evidence\n", True),
        ("import sealtrail.scitt._cose\n", True),
        ("from ..provenance._payloads import DeviceEvidence\n", True),
        ("from sealtrail.cli._common import out\n", True),
        ("from sealtrail.provenance import DeviceIdentity\n", False),
        ("from ._devices import RotDevice\n", False),
        ("from sealtrail.sim._fleet import Fleet\n", False),
    ],
)
def test_the_public_api_check_catches_private_imports(
    tmp_path: Path, source: str, caught: bool
) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(source, encoding="utf-8")
    assert bool(_private_imports(probe, located=SRC / "sim" / "_probe.py")) is caught


@pytest.mark.parametrize(
    ("layer", "source", "caught"),
    [
        ("merkle", "from sealtrail.errors import Error\n", True),
        ("merkle", "from .. import errors\n", True),
        ("storage", "from sealtrail.log import LogReader\n", True),
        ("log", "from ..service import create_app\n", True),
        ("log", "import pymerkle\n", True),
        ("log", "from ..storage import LogStore\n", False),
        ("sim", "from sealtrail.service import service_app\n", True),
        ("sim", "from sealtrail.cli import app\n", True),
        ("provenance", "from sealtrail.sim import Fleet\n", True),
        ("sim", "from sealtrail.client import Client\n", False),
        ("merkle", "from ._hash import leaf_hash\n", False),
    ],
)
def test_the_checker_catches_violations(
    tmp_path: Path, layer: str, source: str, caught: bool
) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(source, encoding="utf-8")
    imports = _imports(probe, located=SRC / layer / "_probe.py")
    assert bool(_violations(layer, imports)) is caught
