"""``sealtrail query``: the provenance views of a running service, read over HTTP.

Every command takes ``--url`` (or ``$SEALTRAIL_URL``), ``--token-file`` (or
``$SEALTRAIL_TOKEN``, for a service with ``[auth] required``), ``--size N`` (the view as of the
first N log entries) and ``--json`` (the service's JSON as is). Without ``--json`` the
answer is printed for people: fields, a tree, or a table. Routes and fields:
docs/queries.md.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from sealtrail.errors import InvalidInput

from ._common import TokenFile, connect, out
from .scitt import DEFAULT_URL, AsJson, Url

__all__ = ["query_app"]

query_app = typer.Typer(
    help="Query the provenance of devices, nodes and shipments on a running service.",
    no_args_is_help=True,
)

#: Hex digits of an entry id shown in tables (the JSON has them whole).
ENTRY_PREFIX = 16

Size = Annotated[
    int | None,
    typer.Option("--size", min=0, help="The view as of the first N log entries (a tree size)."),
]


def _emit(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def _fields(rows: list[tuple[str, object]]) -> None:
    """``name  value`` lines, values printed as they are (no markup)."""
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        shown = "-" if value is None or value == [] else value
        if isinstance(shown, list):
            shown = ", ".join(str(v) for v in shown)
        out.print(f"{name:<{width}}  {shown}", markup=False, highlight=False)


def _as_of(doc: dict[str, Any]) -> str:
    return f"as of log size {doc.get('size')}"


@query_app.command("device")
def device(
    device_id: Annotated[
        str | None, typer.Argument(help="The device id (64 hex digits).", show_default=False)
    ] = None,
    maker: Annotated[str | None, typer.Option(help="Look up by maker (organization).")] = None,
    serial: Annotated[str | None, typer.Option(help="…and the maker's serial.")] = None,
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    size: Size = None,
    as_json: AsJson = False,
) -> None:
    """A device: its manifest, maker and where it is installed (ID, or --maker and --serial)."""
    by_serial = maker is not None or serial is not None
    if by_serial == (device_id is not None) or (by_serial and (maker is None or serial is None)):
        raise InvalidInput(
            "give a device ID, or --maker and --serial", code="device-lookup-invalid"
        )
    with connect(url, token_file) as service:
        if maker is not None and serial is not None:
            doc = service.device_by_serial(maker, serial, size=size)
        else:
            assert device_id is not None
            doc = service.device(device_id, size=size)
    if as_json:
        _emit(doc)
        return
    _fields(
        [
            ("device", doc.get("device_id")),
            ("serial", doc.get("serial")),
            ("kind", doc.get("kind")),
            ("algorithm", doc.get("algorithm")),
            ("maker", doc.get("maker")),
            ("batch", doc.get("batch")),
            ("manifest", doc.get("manifest")),
            ("installed in", " < ".join(doc.get("installed_in") or []) or None),
            ("size", doc.get("size")),
        ]
    )


@query_app.command("node")
def node(
    serial: Annotated[str, typer.Argument(help="The node's serial.")],
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    size: Size = None,
    as_json: AsJson = False,
) -> None:
    """A node (server, blade, rack …); a server with compliance, arrival and attestation."""
    with connect(url, token_file) as service:
        doc = service.node(serial, size=size)
    if as_json:
        _emit(doc)
        return
    rows: list[tuple[str, object]] = [
        ("serial", doc.get("serial")),
        ("type", doc.get("type")),
        ("assembler", doc.get("assembler")),
        ("children", len(doc.get("children") or [])),
        ("devices", len(doc.get("devices") or [])),
        ("installed in", " < ".join(doc.get("installed_in") or []) or None),
        ("in transit", (doc.get("in_transit") or {}).get("shipment")),
    ]
    if doc.get("type") == "server":
        rows += [
            ("compliance", (doc.get("compliance") or {}).get("state")),
            ("arrival", (doc.get("arrival") or {}).get("result")),
            ("attestation", (doc.get("attestation") or {}).get("status")),
        ]
    rows.append(("size", doc.get("size")))
    _fields(rows)


def _branch(parent: Tree, node: dict[str, Any]) -> None:
    for child in node.get("children") or []:
        if "device_id" in child:
            parent.add(Text(f"device {child['device_id']}"))
        else:
            _branch(parent.add(Text(f"{child.get('type')} {child.get('serial')}")), child)


@query_app.command("tree")
def tree(
    serial: Annotated[str, typer.Argument(help="The node's serial.")],
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    size: Size = None,
    as_json: AsJson = False,
) -> None:
    """A node's assembly tree: everything installed in it, nested."""
    with connect(url, token_file) as service:
        doc = service.tree(serial, size=size)
    if as_json:
        _emit(doc)
        return
    root = Tree(Text(f"{doc.get('type')} {doc.get('serial')} ({_as_of(doc)})"))
    _branch(root, doc)
    out.print(root)


@query_app.command("timeline")
def timeline(
    serial: Annotated[
        str | None, typer.Argument(help="The node's serial.", show_default=False)
    ] = None,
    device_id: Annotated[
        str | None, typer.Option("--device", help="A device's timeline instead (its id).")
    ] = None,
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    size: Size = None,
    as_json: AsJson = False,
) -> None:
    """The log entries about a node (all in it, its shipment) or a device, with receipts.

    --json has each entry's receipt (base64 COSE) to verify offline.
    """
    if (serial is None) == (device_id is None):
        raise InvalidInput("give a node SERIAL, or --device ID", code="timeline-subject-invalid")
    with connect(url, token_file) as service:
        if serial is not None:
            doc = service.timeline(serial, size=size)
        else:
            assert device_id is not None
            doc = service.device_timeline(device_id, size=size)
    if as_json:
        _emit(doc)
        return
    subject = f"node {serial}" if serial is not None else f"device {doc.get('device_id')}"
    table = Table(
        title=Text(f"{subject}, {_as_of(doc)}"),
        caption=Text(
            f"receipts against checkpoint size {doc.get('checkpoint')} (--json to get them)"
            + ("; cut at the limit" if doc.get("truncated") else "")
        ),
    )
    table.add_column("index", justify="right")
    table.add_column("kind")
    table.add_column("org")
    table.add_column("entry id")
    for entry in doc.get("entries") or []:
        table.add_row(
            Text(str(entry.get("index"))),
            Text(str(entry.get("kind"))),
            Text(str(entry.get("org"))),
            Text(str(entry.get("entry_id"))[:ENTRY_PREFIX] + "…"),
        )
    out.print(table)


@query_app.command("shipment")
def shipment(
    shipment_id: Annotated[str, typer.Argument(help="The shipment id.")],
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    size: Size = None,
    as_json: AsJson = False,
) -> None:
    """A shipment: carrier, parties, contents, seals and its custody records."""
    with connect(url, token_file) as service:
        doc = service.shipment(shipment_id, size=size)
    if as_json:
        _emit(doc)
        return
    _fields(
        [
            ("shipment", doc.get("shipment_id")),
            ("carrier", doc.get("carrier")),
            ("from", doc.get("from")),
            ("to", doc.get("to")),
            ("contents", doc.get("contents")),
            ("seals", doc.get("seals")),
            ("shipped", doc.get("shipped")),
            ("received", doc.get("received")),
            ("findings", doc.get("findings")),
            ("size", doc.get("size")),
        ]
    )


@query_app.command("compliance")
def compliance(
    state: Annotated[
        str | None, typer.Option(help="Only servers in this state (e.g. verified).")
    ] = None,
    url: Url = DEFAULT_URL,
    token_file: TokenFile = None,
    size: Size = None,
    as_json: AsJson = False,
) -> None:
    """Servers with a compliance record and their state (registered servers have none)."""
    with connect(url, token_file) as service:
        doc = service.compliance(state, size=size)
    if as_json:
        _emit(doc)
        return
    table = Table(title=Text(f"compliance, {_as_of(doc)}"))
    table.add_column("server")
    table.add_column("state")
    table.add_column("reason")
    for row in doc.get("servers") or []:
        table.add_row(
            Text(str(row.get("server_serial"))),
            Text(str(row.get("state"))),
            Text(str(row.get("reason"))),
        )
    out.print(table)
