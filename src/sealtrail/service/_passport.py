"""Passport routes: one self-contained file per server (or node) or device, to verify offline.

``GET /provenance/v1/passports/{serial}`` answers a node's passport,
``GET /provenance/v1/device-passports/{device_id}`` a device's, and
``GET /provenance/v1/device-passports?maker=M&serial=S`` a device's by its maker and serial:
``application/vnd.sealtrail.passport.v1+json`` (docs/passports.md), built against the log's
latest checkpoint and sealed with the service key. The provenance index must have applied
that checkpoint's entries: the request waits for it a moment (:data:`INDEX_WAIT`), then
answers 503 with ``Retry-After`` (``passport-index-behind``). Read-only: nothing is written.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from sealtrail.errors import InvalidInput, NotFound, RetryLater
from sealtrail.log import SignedCheckpoint
from sealtrail.provenance import (
    INDEX_WAIT,
    MAX_ID_LENGTH,
    PASSPORT_TYPE,
    PassportSubject,
    ProvenanceLedger,
    ProvenanceViews,
    build_passport,
)
from sealtrail.scitt import ORG_RECORD_TYPE, TransparencyService

from ._openapi import answer

__all__ = ["DEVICE_PASSPORTS", "INDEX_WAIT", "PASSPORTS", "add_passport_routes"]

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

    def __init__(self, ledger: ProvenanceLedger, service: TransparencyService) -> None:
        self.ledger = ledger
        self.views = ProvenanceViews(ledger.index)
        self.service = service
        self.verifier_key = service.sequencer.signer.verifier_key()

    def _statement(self, entry_id: bytes) -> bytes | None:
        record = self.service.store.get_statement(entry_id)
        return None if record is None else record.body

    def _org_records(self) -> Iterable[bytes]:
        return [r.body for r in self.service.store.statements_of_type(ORG_RECORD_TYPE)]

    def build(self, subject: PassportSubject, checkpoint: SignedCheckpoint) -> bytes:
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

    async def export(self, subject: PassportSubject, *, wait: float) -> bytes:
        """The passport against the latest checkpoint, once the index has reached it."""
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
        return await run_in_threadpool(self.build, subject, checkpoint)


def _answer(data: bytes) -> Response:
    return Response(data, media_type=PASSPORT_TYPE, headers=NO_STORE)


def add_passport_routes(
    app: FastAPI,
    *,
    ledger: ProvenanceLedger,
    service: TransparencyService,
    wait: float = INDEX_WAIT,
) -> None:
    """The passport routes (docs/passports.md) over a writing service and its ledger."""
    exporter = PassportExporter(ledger, service)

    @app.get(
        PASSPORTS + "/{serial}", tags=["provenance"], response_class=Response, responses=_PASSPORT
    )
    async def node_passport(serial: str) -> Response:
        """A node's passport (a server, a blade, a rack): everything to verify it offline."""
        checked = _name(serial, "a serial", "serial-invalid")
        return _answer(await exporter.export(PassportSubject.node(checked), wait=wait))

    @app.get(
        DEVICE_PASSPORTS + "/{device_id}",
        tags=["provenance"],
        response_class=Response,
        responses=_PASSPORT,
    )
    async def device_passport(device_id: str) -> Response:
        """A device's passport, by its device id."""
        subject = PassportSubject.device(_device_id(device_id))
        return _answer(await exporter.export(subject, wait=wait))

    @app.get(DEVICE_PASSPORTS, tags=["provenance"], response_class=Response, responses=_PASSPORT)
    async def device_passport_by_serial(
        maker: str | None = None, serial: str | None = None
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
        return _answer(await exporter.export(PassportSubject.device(device_id), wait=wait))
