"""Read views over the provenance index: a device, a node (server, blade, rack …), a
shipment, the compliance list, a timeline and an assembly tree — now, or as of a tree size.

Every view reads the index only (``provenance.db``); each names the log entries its facts
come from (``entry`` fields are entry ids, timelines carry log indexes), so a caller can
fetch the statements and their receipts. ``size`` gives the view as of the first ``size``
log entries (a checkpoint's size): point-in-time, from the index's change history.
"""

from __future__ import annotations

import json
from typing import Any

from sealtrail.errors import InvalidInput, NotFound
from sealtrail.storage import IndexedEntry, IndexStore

from ._state import ProvenanceState, Rows, Value, lineage

__all__ = ["MAX_TIMELINE", "MAX_TREE_NODES", "ProvenanceViews", "shipment_unknown"]


def shipment_unknown() -> NotFound:
    """The answer for a shipment no custody record names (and, to a carrier that is no
    party to it, for one another organization's records name: docs/auth.md)."""
    return NotFound("no custody record names this shipment", code="shipment-unknown")


#: Most entries one timeline returns.
MAX_TIMELINE = 1000
#: Most nodes and devices one assembly tree holds.
MAX_TREE_NODES = 10_000


class _IndexRows:
    """The index's rows, now or as of ``size`` entries (read-only)."""

    def __init__(self, index: IndexStore, size: int | None) -> None:
        self.index = index
        self.size = size

    def get(self, table: str, key: str) -> Value | None:
        if self.size is None:
            raw = self.index.row(table, key)
        else:
            raw = self.index.row_at(table, key, self.size)
        return None if raw is None else json.loads(raw)

    def put(self, table: str, key: str, value: Value | None) -> None:
        raise TypeError("views are read-only")


def entry_doc(entry: IndexedEntry) -> dict[str, Any]:
    """An index entry as JSON: its log index, entry id, kind, issuer org and verdict."""
    doc: dict[str, Any] = {
        "index": entry.index,
        "entry_id": entry.entry_id.hex(),
        "kind": entry.kind,
        "org": entry.org,
        "outcome": entry.outcome,
    }
    if entry.code is not None:
        doc["code"] = entry.code
    return doc


class ProvenanceViews:
    """Queries over one index; every method raises :class:`NotFound` for an unknown name."""

    def __init__(self, index: IndexStore) -> None:
        self.index = index
        self._state = ProvenanceState()

    def rows(self, size: int | None = None) -> Rows:
        if size is not None and not 0 <= size <= self.index.applied_size():
            raise NotFound(
                f"the index has applied {self.index.applied_size()} entries, not {size}",
                code="index-size-unknown",
            )
        return _IndexRows(self.index, size)

    def device(self, device_id: str, *, size: int | None = None) -> dict[str, Any]:
        rows = self.rows(size)
        device = rows.get("device", device_id)
        if device is None:
            raise NotFound("no registered manifest holds this device", code="device-unknown")
        holder = rows.get("parent", f"device:{device_id}")
        return {
            "device_id": device_id,
            **{k: v for k, v in device.items() if k != "identity"},
            "installed_in": [] if holder is None else list(lineage(rows, holder["parent"])),
        }

    def find_device(self, maker: str, serial: str) -> str:
        """A device id by its maker and serial."""
        row = self.index.row("device-serial", f"{maker}/{serial}")
        if row is None:
            raise NotFound("no device with this maker and serial", code="device-unknown")
        device_id: str = json.loads(row)["device_id"]
        return device_id

    def node(self, serial: str, *, size: int | None = None) -> dict[str, Any]:
        rows = self.rows(size)
        node = rows.get("node", serial)
        if node is None:
            raise NotFound("no assembly record built this node", code="node-unknown")
        holder = rows.get("parent", f"node:{serial}")
        doc: dict[str, Any] = {
            "serial": serial,
            "type": node["type"],
            "assembler": node["assembler"],
            "children": node["children"],
            "installed_in": [] if holder is None else list(lineage(rows, holder["parent"])),
            "devices": self._state.devices_of(serial, rows),
            "in_transit": rows.get("transit", serial),
        }
        if node["type"] == "server":
            doc["compliance"] = rows.get("compliance", serial) or {"state": "registered"}
            doc["arrival"] = rows.get("arrival", serial)
            doc["attestation"] = rows.get("attestation", serial)
        return doc

    def shipment(self, shipment_id: str, *, size: int | None = None) -> dict[str, Any]:
        row = self.rows(size).get("shipment", shipment_id)
        if row is None:
            raise shipment_unknown()
        return {"shipment_id": shipment_id, **row}

    def compliance(self, *, state: str | None = None) -> list[dict[str, Any]]:
        """Servers with a compliance record, by serial (``registered`` ones have none)."""
        found = []
        for serial, raw in self.index.rows("compliance"):
            row = json.loads(raw)
            if state is None or row["state"] == state:
                found.append({"server_serial": serial, **row})
        return found

    def tree(self, serial: str, *, size: int | None = None) -> dict[str, Any]:
        """A node and everything installed in it, nested."""
        rows = self.rows(size)
        if rows.get("node", serial) is None:
            raise NotFound("no assembly record built this node", code="node-unknown")
        budget = [MAX_TREE_NODES]

        def build(name: str) -> dict[str, Any]:
            budget[0] -= 1
            if budget[0] < 0:
                raise InvalidInput(
                    f"the assembly tree holds more than {MAX_TREE_NODES} nodes",
                    code="tree-too-large",
                )
            node = rows.get("node", name)
            assert node is not None
            children: list[dict[str, Any]] = []
            for key in node["children"]:
                kind, _, child = key.partition(":")
                if kind == "device":
                    budget[0] -= 1
                    children.append({"device_id": child})
                else:
                    children.append(build(child))
            return {"serial": name, "type": node["type"], "children": children}

        return build(serial)

    def subjects(self, serial: str, *, size: int | None = None) -> list[str]:
        """What a node's timeline is about: the node, everything in it, its shipments."""
        rows = self.rows(size)
        tree = self.tree(serial, size=size)
        found: list[str] = []
        stack = [tree]
        while stack:
            node = stack.pop()
            if "device_id" in node:
                found.append(f"device:{node['device_id']}")
                continue
            found.append(f"node:{node['serial']}")
            stack.extend(node["children"])
        arrival = rows.get("arrival", serial)
        if arrival is not None:
            found.append(f"shipment:{arrival['shipment']}")
        return sorted(set(found))

    def timeline(
        self, subjects: list[str], *, size: int | None = None, limit: int = MAX_TIMELINE
    ) -> list[IndexedEntry]:
        """The applied entries about any of ``subjects``, in log order (at most ``limit``)."""
        if not 1 <= limit <= MAX_TIMELINE:
            raise InvalidInput(f"limit is 1..{MAX_TIMELINE}", code="timeline-bad-limit")
        bound = self.index.applied_size() if size is None else size
        seen: dict[int, IndexedEntry] = {}
        for subject in subjects:
            for entry in self.index.entries_about(subject, limit=limit):
                if entry.index < bound and entry.outcome == "applied":
                    seen[entry.index] = entry
        return [seen[i] for i in sorted(seen)][:limit]
