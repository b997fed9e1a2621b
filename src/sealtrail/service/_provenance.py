"""Provenance query routes (``/provenance/v1``): the ledger's read views as JSON.

Every answer says which index ``size`` it reflects (the view as of the first ``size`` log
entries), and timelines carry, for each entry, a receipt against one checkpoint (its size
is ``checkpoint``), so a client can verify every fact it is shown offline. Read-only:
nothing here writes, and a refused request changes nothing.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote_to_bytes

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from sealtrail.errors import Corruption, InvalidInput, NotFound
from sealtrail.provenance import (
    MAX_CHALLENGE_COUNT,
    MAX_ID_LENGTH,
    MAX_TIMELINE,
    POLICY_KEY,
    ComplianceState,
    Issued,
    ProvenanceLedger,
    ProvenanceViews,
    entry_doc,
)
from sealtrail.scitt import TransparencyService
from sealtrail.scitt._registry import load_json
from sealtrail.storage import IndexedEntry

from ._auth import Auth
from ._openapi import json_body
from ._scrapi import read_body

__all__ = ["PREFIX", "ProvenanceQueries", "add_provenance_routes"]

PREFIX = "/provenance/v1"
#: Largest challenge request body, in bytes.
MAX_CHALLENGE_BODY = 4096
_CHALLENGE_SHAPE = 'send {"server_serial": "...", "count": N}'
#: A view moves with every indexed entry: never cached.
NO_STORE = {"Cache-Control": "no-store"}
#: Longest ``size`` parameter, in digits (a tree size is below 2^63).
MAX_SIZE_DIGITS = 19

_DEVICE_ID = re.compile(r"[0-9a-f]{64}")
_STATES = frozenset(state.value for state in ComplianceState)
_T = TypeVar("_T")


def _device_id(value: str) -> str:
    if not _DEVICE_ID.fullmatch(value):
        raise InvalidInput(
            "a device id is 64 lowercase hex digits (SHA-256 of its identity key)",
            code="device-id-invalid",
        )
    return value


def _name(value: str, what: str, code: str, *, utf8: bool = True) -> str:
    """An identifier: 1..MAX_ID_LENGTH printable characters (never echoed back). ``utf8``
    False: the request spelled it with percent-encoded bytes that are not UTF-8, which the
    server decoded to U+FFFD (a name no lookup should be asked for)."""
    if not utf8:
        raise InvalidInput(f"{what} is not UTF-8 once percent-decoded", code=code)
    if not 1 <= len(value) <= MAX_ID_LENGTH or not value.isprintable():
        raise InvalidInput(f"{what} is 1..{MAX_ID_LENGTH} printable characters", code=code)
    return value


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _path_utf8(request: Request) -> bool:
    """Whether the request's path, percent-decoded, is UTF-8 (the ASGI server decodes it
    with U+FFFD for what is not, and keeps the bytes it got in ``raw_path``)."""
    raw = request.scope.get("raw_path")
    return not isinstance(raw, bytes) or _utf8(unquote_to_bytes(raw))


def _query_utf8(request: Request, name: str) -> bool:
    """Whether every value of the query parameter ``name``, percent-decoded, is UTF-8."""
    query = request.scope.get("query_string", b"")
    if not isinstance(query, bytes):
        return True
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True, encoding="latin-1")
    return all(_utf8(value.encode("latin-1")) for key, value in pairs if key == name)


def _serial(request: Request, serial: str) -> str:
    """The serial of a ``/nodes/{serial}`` path (the path's one part a client spells)."""
    return _name(serial, "a serial", "serial-invalid", utf8=_path_utf8(request))


def _size(value: str | None) -> int | None:
    """The ``size`` parameter: a tree size, 0 or more."""
    if value is None:
        return None
    if not (value.isascii() and value.isdigit() and len(value) <= MAX_SIZE_DIGITS):
        raise InvalidInput("size is a tree size: an integer, 0 or more", code="size-invalid")
    return int(value)


def _state(value: str | None) -> str | None:
    if value is not None and value not in _STATES:
        raise InvalidInput(
            "state is one of " + ", ".join(sorted(_STATES)), code="compliance-state-invalid"
        )
    return value


class ProvenanceQueries:
    """The views as the routes answer them: each pinned to one index size, timelines with
    their receipts. Blocking (the index is SQLite): call from a worker thread."""

    def __init__(self, ledger: ProvenanceLedger, service: TransparencyService) -> None:
        self.index = ledger.index
        self.views = ProvenanceViews(ledger.index)
        self.service = service
        self.defaults = ledger.policy

    def _pinned(self, size: int | None, view: Callable[[int | None], _T]) -> tuple[_T, int]:
        """``view`` at ``size``, or now; with the index size it reflects.

        "Now" reads the current rows (the fast path) and is exact when the index did not
        move meanwhile; when it did, the view is read again as of the newer size.
        """
        if size is not None:
            self.views.rows(size)  # index-size-unknown beyond what the index applied
            return view(size), size
        before = self.index.applied_size()
        found = view(None)
        after = self.index.applied_size()
        if after == before:
            return found, before
        return view(after), after

    def proof(self, size: int | None) -> dict[str, Any]:
        """For a view as of ``size``: the tree of that size and how it leads to the latest
        checkpoint (its root, the signed checkpoint, an RFC 9162 consistency proof), so a
        client can check offline that the view's log is a prefix of the signed one."""
        if size is None:
            return {}
        reader = self.service.reader
        checkpoint = reader.checkpoint()
        if checkpoint is None or size == 0:
            return {"tree": {"size": size}}
        proof = reader.consistency_proof(size, checkpoint.size)
        return {
            "tree": {
                "size": size,
                "root": base64.b64encode(reader.root(size)).decode("ascii"),
                "checkpoint": checkpoint.note.decode("utf-8"),
                "consistency": [base64.b64encode(h).decode("ascii") for h in proof.hashes],
            }
        }

    def device(self, device_id: str, size: int | None) -> dict[str, Any]:
        doc, at = self._pinned(size, lambda s: self.views.device(device_id, size=s))
        return {**doc, "size": at, **self.proof(size)}

    def device_by_serial(self, maker: str, serial: str, size: int | None) -> dict[str, Any]:
        return self.device(self.views.find_device(maker, serial), size)

    def node(self, serial: str, size: int | None) -> dict[str, Any]:
        doc, at = self._pinned(size, lambda s: self.views.node(serial, size=s))
        return {**doc, "size": at, **self.proof(size)}

    def tree(self, serial: str, size: int | None) -> dict[str, Any]:
        doc, at = self._pinned(size, lambda s: self.views.tree(serial, size=s))
        return {**doc, "size": at, **self.proof(size)}

    def shipment(
        self,
        shipment_id: str,
        size: int | None,
        may_see: Callable[[dict[str, Any]], None] = lambda doc: None,
    ) -> dict[str, Any]:
        """The shipment's view, if ``may_see`` (given the view) does not refuse it: asked
        before anything else is read, so that a refusal costs what an unknown id does."""
        doc, at = self._pinned(size, lambda s: self.views.shipment(shipment_id, size=s))
        may_see(doc)
        return {**doc, "size": at, **self.proof(size)}

    def policy(self, size: int | None) -> dict[str, Any]:
        """The provenance policy in force (docs/provenance.md): the latest policy record's
        settings with its version, entry and ``iat``, or before the log holds one the
        defaults (version 0, no entry)."""

        def view(at: int | None) -> dict[str, Any]:
            raw = (
                self.index.row("policy", POLICY_KEY)
                if at is None
                else self.index.row_at("policy", POLICY_KEY, at)
            )
            if raw is not None:
                row: dict[str, Any] = json.loads(raw)
                return row
            return {
                "version": 0,
                "max_attestation_age": self.defaults.max_attestation_age,
                "min_security_version": dict(self.defaults.min_security_version),
                "entry": None,
                "iat": None,
            }

        doc, at = self._pinned(size, view)
        return {**doc, "size": at, **self.proof(size)}

    def compliance(self, state: str | None, size: int | None) -> dict[str, Any]:
        def view(at: int | None) -> list[dict[str, Any]]:
            if at is None:
                return self.views.compliance(state=state)
            return self._compliance_at(state, at)

        servers, at = self._pinned(size, view)
        return {"state": state, "servers": servers, "size": at, **self.proof(size)}

    def _compliance_at(self, state: str | None, size: int) -> list[dict[str, Any]]:
        """:meth:`ProvenanceViews.compliance` as of ``size`` entries.

        A compliance row is never deleted, so the servers with one at ``size`` are among
        those with one now.
        """
        found = []
        for serial, _ in self.index.rows("compliance"):
            raw = self.index.row_at("compliance", serial, size)
            if raw is None:
                continue
            row = json.loads(raw)
            if state is None or row["state"] == state:
                found.append({"server_serial": serial, **row})
        return found

    def node_timeline(self, serial: str, size: int | None) -> dict[str, Any]:
        def view(at: int | None) -> tuple[list[str], list[IndexedEntry]]:
            subjects = self.views.subjects(serial, size=at)
            return subjects, self.views.timeline(subjects, size=at)

        (subjects, entries), at = self._pinned(size, view)
        return {"serial": serial, "subjects": subjects, **self._timeline(entries, at)}

    def device_timeline(self, device_id: str, size: int | None) -> dict[str, Any]:
        def view(at: int | None) -> list[IndexedEntry]:
            self.views.device(device_id, size=at)  # device-unknown
            return self.views.timeline([f"device:{device_id}"], size=at)

        entries, at = self._pinned(size, view)
        return {"device_id": device_id, **self._timeline(entries, at)}

    def _timeline(self, entries: Sequence[IndexedEntry], size: int) -> dict[str, Any]:
        checkpoint, receipts = self._receipts(entries)
        return {
            "size": size,
            "checkpoint": checkpoint,
            "truncated": len(entries) >= MAX_TIMELINE,
            "entries": [
                {**entry_doc(e), "receipt": base64.b64encode(r).decode("ascii")}
                for e, r in zip(entries, receipts, strict=True)
            ],
        }

    def _receipts(self, entries: Sequence[IndexedEntry]) -> tuple[int, list[bytes]]:
        """Receipts for ``entries`` against one checkpoint, the latest; and its size.

        The same receipts as ``TransparencyService.receipt`` issues, but all against one
        tree: the checkpoint is read once, after the index (which only holds entries a
        checkpoint covered), and the service signs its root once for all of them.
        """
        reader = self.service.reader
        checkpoint = reader.checkpoint()
        if checkpoint is None:
            if entries:
                raise Corruption("the provenance index holds entries of an empty log")
            return 0, []
        receipts = []
        for entry in entries:
            if entry.index >= checkpoint.size:
                raise Corruption(
                    f"the provenance index holds entry {entry.index}, beyond the log's "
                    f"checkpoint ({checkpoint.size})"
                )
            receipts.append(self.service.receipt_at(checkpoint, entry.entry_id, entry.index))
        return checkpoint.size, receipts


def _answer(doc: dict[str, Any]) -> JSONResponse:
    return JSONResponse(doc, headers=NO_STORE)


async def _challenge(ledger: ProvenanceLedger, serial: str, count: int) -> Issued:
    try:
        return ledger.challenge(serial, count)
    except NotFound as exc:
        if not ledger.shared or exc.code != "node-unknown":
            raise
    await ledger.refresh()  # assembled through another process a moment ago?
    return ledger.challenge(serial, count)


def add_provenance_routes(  # noqa: PLR0915 (one statement per route)
    app: FastAPI, ledger: ProvenanceLedger, service: TransparencyService, auth: Auth
) -> None:
    """The read-only query routes under :data:`PREFIX` (docs/queries.md); ``auth`` checks
    what the route table cannot see (a carrier's shipments)."""
    queries = ProvenanceQueries(ledger, service)

    async def answer(
        view: Callable[..., dict[str, Any]], *args: str | None, size: int | None
    ) -> JSONResponse:
        """``view(*args, size)`` once the index has caught up with the log (or ``size``)."""
        await ledger.synced(size)
        return _answer(await run_in_threadpool(view, *args, size))

    @app.post(
        PREFIX + "/challenges",
        tags=["provenance"],
        status_code=201,
        response_class=JSONResponse,
        responses={201: {"description": "The nonces, and when they expire"}},
        openapi_extra=json_body(
            {
                "server_serial": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH},
                "count": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_CHALLENGE_COUNT,
                    "default": 1,
                },
            },
            required=("server_serial",),
        ),
    )
    async def challenges(request: Request) -> JSONResponse:
        """Fresh nonces for a server's attestation or arrival (one per device to challenge).

        Body: ``{"server_serial": "...", "count": N}`` (count 1..1024, default 1). Answers
        201 with the nonces and when they expire; each is accepted once, for that server.
        """
        body = await read_body(request, MAX_CHALLENGE_BODY)
        doc = load_json(body, _CHALLENGE_SHAPE, code="challenge-request-invalid")
        if not isinstance(doc, dict) or not set(doc) <= {"server_serial", "count"}:
            raise InvalidInput(_CHALLENGE_SHAPE, code="challenge-request-invalid")
        serial = doc.get("server_serial")
        count = doc.get("count", 1)
        if not isinstance(serial, str) or not isinstance(count, int) or isinstance(count, bool):
            raise InvalidInput(
                "server_serial must be a string and count an integer",
                code="challenge-request-invalid",
            )
        issued = await _challenge(ledger, _name(serial, "a serial", "serial-invalid"), count)
        return JSONResponse(
            {
                "server_serial": issued.server_serial,
                "nonces": list(issued.nonces),
                "expires": issued.expires,
            },
            status_code=201,
            headers=NO_STORE,
        )

    @app.get(PREFIX + "/devices", tags=["provenance"], response_class=JSONResponse)
    async def device_by_serial(
        request: Request,
        maker: str | None = None,
        serial: str | None = None,
        size: str | None = None,
    ) -> JSONResponse:
        """A device by its maker (organization name) and serial, as ``/devices/{id}``."""
        if maker is None or serial is None:
            raise InvalidInput(
                "look a device up by maker and serial (both), or by its id: /devices/{id}",
                code="device-lookup-invalid",
            )
        at = _size(size)
        maker = _name(maker, "a maker", "maker-invalid", utf8=_query_utf8(request, "maker"))
        serial = _name(serial, "a serial", "serial-invalid", utf8=_query_utf8(request, "serial"))
        return await answer(queries.device_by_serial, maker, serial, size=at)

    @app.get(PREFIX + "/devices/{device_id}", tags=["provenance"], response_class=JSONResponse)
    async def device(device_id: str, size: str | None = None) -> JSONResponse:
        """A device: its manifest, maker and where it is installed."""
        at, checked = _size(size), _device_id(device_id)
        return await answer(queries.device, checked, size=at)

    @app.get(
        PREFIX + "/devices/{device_id}/timeline", tags=["provenance"], response_class=JSONResponse
    )
    async def device_timeline(device_id: str, size: str | None = None) -> JSONResponse:
        """The applied log entries about a device, each with a receipt."""
        at, checked = _size(size), _device_id(device_id)
        return await answer(queries.device_timeline, checked, size=at)

    @app.get(PREFIX + "/nodes/{serial}", tags=["provenance"], response_class=JSONResponse)
    async def node(request: Request, serial: str, size: str | None = None) -> JSONResponse:
        """A node (server, blade, rack …); a server with compliance, arrival, attestation."""
        at, checked = _size(size), _serial(request, serial)
        return await answer(queries.node, checked, size=at)

    @app.get(PREFIX + "/nodes/{serial}/tree", tags=["provenance"], response_class=JSONResponse)
    async def tree(request: Request, serial: str, size: str | None = None) -> JSONResponse:
        """A node and everything installed in it, nested."""
        at, checked = _size(size), _serial(request, serial)
        return await answer(queries.tree, checked, size=at)

    @app.get(PREFIX + "/nodes/{serial}/timeline", tags=["provenance"], response_class=JSONResponse)
    async def node_timeline(request: Request, serial: str, size: str | None = None) -> JSONResponse:
        """The applied entries about a node, everything in it and its shipment, with receipts."""
        at, checked = _size(size), _serial(request, serial)
        return await answer(queries.node_timeline, checked, size=at)

    @app.get(PREFIX + "/shipments/{shipment_id}", tags=["provenance"], response_class=JSONResponse)
    async def shipment(request: Request, shipment_id: str, size: str | None = None) -> JSONResponse:
        """A shipment: carrier, parties, contents, seals, and its custody records (to a
        carrier, only a shipment its organization carries, sends or receives: any other is
        answered as an unknown one)."""
        at = _size(size)
        checked = _name(
            shipment_id, "a shipment id", "shipment-id-invalid", utf8=_path_utf8(request)
        )
        principal = request.state.principal

        def may_see(doc: dict[str, Any]) -> None:
            auth.may_see_shipment(principal, (doc.get("carrier"), doc.get("from"), doc.get("to")))

        await ledger.synced(at)
        return _answer(await run_in_threadpool(queries.shipment, checked, at, may_see))

    @app.get(PREFIX + "/policy", tags=["provenance"], response_class=JSONResponse)
    async def policy(size: str | None = None) -> JSONResponse:
        """The service's provenance policy in force: maximum attestation age, minimum
        security versions, and the policy record that set them (log entries)."""
        return await answer(queries.policy, size=_size(size))

    @app.get(PREFIX + "/compliance", tags=["provenance"], response_class=JSONResponse)
    async def compliance(state: str | None = None, size: str | None = None) -> JSONResponse:
        """Servers with a compliance record (``registered`` ones have none), by serial."""
        at, checked = _size(size), _state(state)
        return await answer(queries.compliance, checked, size=at)
