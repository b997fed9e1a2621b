"""Passport routes: one self-contained file per server (or node) or device, to verify offline.

``GET /provenance/v1/passports/{serial}`` answers a node's passport,
``GET /provenance/v1/device-passports/{device_id}`` a device's, and
``GET /provenance/v1/device-passports?maker=M&serial=S`` a device's by its maker and serial:
``application/vnd.sealtrail.passport.v1+json`` (docs/passports.md), built against the log's
latest checkpoint and sealed with the service key. The provenance index must have applied
that checkpoint's entries: the request waits for it a moment (:data:`INDEX_WAIT`), then
answers 503 with ``Retry-After`` (``passport-index-behind``). Read-only: nothing is written.

A passport holds every signed statement of its subject's scope, whoever issued it, so with
``[auth] required`` it goes to auditors and administrators, and to an operator only for a
server its organization has had in its hands (it recorded an affirming attestation of it),
a device or blade all of whose servers it has had, or when it may read every statement
inside anyway (:meth:`Auth.may_export`; docs/auth.md). Anyone else is refused, 403
``contents-forbidden``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Iterator

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from sealtrail.errors import InvalidInput, NotFound, RetryLater
from sealtrail.log import SignedCheckpoint
from sealtrail.provenance import (
    INDEX_WAIT,
    MAX_ID_LENGTH,
    MAX_TREE_NODES,
    PASSPORT_TYPE,
    EarStatus,
    PassportSubject,
    ProvenanceLedger,
    ProvenanceViews,
    build_passport,
)
from sealtrail.scitt import (
    ORG_RECORD_TYPE,
    TransparencyService,
    parse_statement,
    split_transparent,
)

from ._auth import Auth, Principal
from ._openapi import answer

__all__ = ["DEVICE_PASSPORTS", "INDEX_WAIT", "PASSPORTS", "add_passport_routes"]

#: An attestation row's status when the ledger's appraisal affirmed it.
AFFIRMING = EarStatus.AFFIRMING.value

PASSPORTS = "/provenance/v1/passports"
DEVICE_PASSPORTS = "/provenance/v1/device-passports"
#: A passport is a snapshot of a moving log: never cached.
NO_STORE = {"Cache-Control": "no-store"}
_PASSPORT = answer(200, "The passport (docs/passports.md)", PASSPORT_TYPE)

_DEVICE_ID = re.compile(r"[0-9a-f]{64}")


def _name(value: str, what: str, code: str) -> str:
    """An identifier: 1..MAX_ID_LENGTH printable characters (never echoed back)."""
    if not 1 <= len(value) <= MAX_ID_LENGTH or not value.isprintable():
        raise InvalidInput(f"{what} is 1..{MAX_ID_LENGTH} printable characters", code=code)
    return value


def _device_id(value: str) -> str:
    if not _DEVICE_ID.fullmatch(value):
        raise InvalidInput(
            "a device id is 64 lowercase hex digits (SHA-256 of its identity key)",
            code="device-id-invalid",
        )
    return value


class PassportExporter:
    """Builds passports from a running service's store, log and index (blocking: call
    :meth:`build` from a worker thread)."""

    def __init__(self, ledger: ProvenanceLedger, service: TransparencyService, auth: Auth) -> None:
        self.ledger = ledger
        self.views = ProvenanceViews(ledger.index)
        self.service = service
        self.auth = auth
        self.verifier_key = service.sequencer.signer.verifier_key()

    def _statement(self, entry_id: bytes) -> bytes | None:
        record = self.service.store.get_statement(entry_id)
        return None if record is None else record.body

    def _org_records(self) -> Iterable[bytes]:
        return [r.body for r in self.service.store.statements_of_type(ORG_RECORD_TYPE)]

    def holders(self, subject: PassportSubject, size: int) -> set[str]:
        """The organizations that have had every server of the subject's passport in their
        hands, as of the first ``size`` log entries: the server the subject is, or every
        server it sits or sat in (a node's or device's ``parent`` rows, every version, and
        so on up). An organization has had a server when it recorded an affirming
        attestation of it: its devices signed the attestation's fresh nonce, which no
        one without them can do (a carrier's word that a server was shipped to someone is
        not enough). None of them for a subject in no server (a rack, a device never installed)."""
        index = self.ledger.index
        nodes = {subject.name} if subject.kind == "node" else set()
        seen, stack = {str(subject)}, [str(subject)]
        while stack and len(seen) <= MAX_TREE_NODES:
            for at, value in index.history("parent", stack.pop()):
                if at >= size or value is None:
                    continue
                parent = str(json.loads(value)["parent"])
                nodes.add(parent)
                if f"node:{parent}" not in seen:
                    seen.add(f"node:{parent}")
                    stack.append(f"node:{parent}")
        servers = [serial for serial in sorted(nodes) if self._is_server(serial)]
        found: set[str] | None = None
        for serial in servers:
            attested = self._attested_by(serial, size)
            found = attested if found is None else found & attested
        return found or set()

    def _is_server(self, serial: str) -> bool:
        raw = self.ledger.index.row("node", serial)
        return raw is not None and json.loads(raw).get("type") == "server"

    def _attested_by(self, serial: str, size: int) -> set[str]:
        """The organizations that recorded an affirming attestation of server ``serial``
        within the first ``size`` log entries."""
        index = self.ledger.index
        found: set[str] = set()
        for at, value in index.history("attestation", serial):
            if at < size and value is not None and json.loads(value)["status"] == AFFIRMING:
                found.update(entry.org for entry in index.entries(at, at + 1))
        return found

    def contents(self, passport: bytes) -> Iterator[tuple[str | None, bytes]]:
        """The issuing organization and entry id of each signed statement of a passport
        this service built, as ``/entries/{id}/statement`` judges them."""
        for item in json.loads(passport)["statements"]:
            body, _ = split_transparent(base64.b64decode(item["statement"]))
            statement = parse_statement(body, max_size=len(body))
            yield self.service.registry.name_of(statement.issuer), statement.leaf_entry

    def build(
        self,
        subject: PassportSubject,
        checkpoint: SignedCheckpoint,
        principal: Principal,
    ) -> bytes:
        """The passport, if ``principal`` may export it (checked once it is built, so that
        an unknown subject is answered 404 as by the views, which tell an operator which
        nodes and devices exist anyway)."""
        data = self._build(subject, checkpoint)
        self.auth.may_export(
            principal,
            holders=lambda: self.holders(subject, checkpoint.size),
            contents=lambda: self.contents(data),
        )
        return data

    def _build(self, subject: PassportSubject, checkpoint: SignedCheckpoint) -> bytes:
        service = self.service
        return build_passport(
            subject,
            views=self.views,
            statements=self._statement,
            org_records=self._org_records,
            reader=service.reader,
            checkpoint=checkpoint,
            receipts=service.receipts,
            key_set=service.key_set(),
            verifier_key=self.verifier_key,
            seal=service.signer,
        )

    async def export(self, subject: PassportSubject, *, wait: float, principal: Principal) -> bytes:
        """The passport against the latest checkpoint, once the index has reached it, if
        ``principal`` may export it."""
        checkpoint = await run_in_threadpool(self.service.reader.checkpoint)
        if checkpoint is None:
            raise NotFound(
                f"the log is empty: no {subject.kind} has provenance yet",
                code=f"{subject.kind}-unknown",
            )
        if not await self.ledger.synced(checkpoint.size, timeout=wait):
            raise RetryLater(
                "the provenance index has not reached the log's checkpoint yet",
                retry_after=1.0,
                code="passport-index-behind",
            )
        return await run_in_threadpool(self.build, subject, checkpoint, principal)


def _principal(request: Request) -> Principal:
    """Who asks: resolved by the app's access check before any route runs."""
    principal: Principal = request.state.principal
    return principal


def _answer(data: bytes) -> Response:
    return Response(data, media_type=PASSPORT_TYPE, headers=NO_STORE)


def add_passport_routes(
    app: FastAPI,
    *,
    ledger: ProvenanceLedger,
    service: TransparencyService,
    wait: float = INDEX_WAIT,
    auth: Auth | None = None,
) -> None:
    """The passport routes (docs/passports.md) over a writing service and its ledger;
    ``auth`` decides who may export which passport (by default the app's own, which
    :func:`create_app` keeps in ``app.state.auth``)."""
    exporter = PassportExporter(ledger, service, auth or app.state.auth)

    @app.get(
        PASSPORTS + "/{serial}", tags=["provenance"], response_class=Response, responses=_PASSPORT
    )
    async def node_passport(serial: str, request: Request) -> Response:
        """A node's passport (a server, a blade, a rack): everything to verify it offline."""
        checked = _name(serial, "a serial", "serial-invalid")
        subject = PassportSubject.node(checked)
        return _answer(await exporter.export(subject, wait=wait, principal=_principal(request)))

    @app.get(
        DEVICE_PASSPORTS + "/{device_id}",
        tags=["provenance"],
        response_class=Response,
        responses=_PASSPORT,
    )
    async def device_passport(device_id: str, request: Request) -> Response:
        """A device's passport, by its device id."""
        subject = PassportSubject.device(_device_id(device_id))
        return _answer(await exporter.export(subject, wait=wait, principal=_principal(request)))

    @app.get(DEVICE_PASSPORTS, tags=["provenance"], response_class=Response, responses=_PASSPORT)
    async def device_passport_by_serial(
        request: Request, maker: str | None = None, serial: str | None = None
    ) -> Response:
        """A device's passport, by its maker (organization name) and serial."""
        if maker is None or serial is None:
            raise InvalidInput(
                "look a device up by maker and serial (both), or by its id",
                code="device-lookup-invalid",
            )
        maker = _name(maker, "a maker", "maker-invalid")
        serial = _name(serial, "a serial", "serial-invalid")
        device_id = await run_in_threadpool(exporter.views.find_device, maker, serial)
        subject = PassportSubject.device(device_id)
        return _answer(await exporter.export(subject, wait=wait, principal=_principal(request)))
