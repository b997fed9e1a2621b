"""``sealtrail passport``: one self-contained file about a server (or any node) or a device.

``export`` writes the file, from a running service (``--url``, or ``$SEALTRAIL_URL``) or
from this machine's data directory (``--data-dir``: the store, the provenance index and the
service key); it checks the file before writing it, and never overwrites one without
``--force``. ``verify`` checks a file offline, with nothing but the file and — to know who
made it — the keys you pin (``--log-key``, ``--service-keys``), then prints the journey.
Format and what a passport proves: docs/passports.md.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

import httpx
import typer
from rich import box
from rich.table import Table
from rich.text import Text

from sealtrail.client import (
    NOT_FOUND_HINTS,
    TOKEN_HINTS,
    ServiceError,
    ServiceUnreachable,
    tls_for,
)
from sealtrail.config import Config, open_log_store
from sealtrail.errors import (
    Error,
    Forbidden,
    InvalidInput,
    NotFound,
    RateLimited,
    RetryLater,
    TooLarge,
    Unauthorized,
    VerificationError,
)
from sealtrail.keys import Verifier
from sealtrail.log import LogReader
from sealtrail.note import NoteVerifier
from sealtrail.provenance import (
    MAX_PASSPORT_SIZE,
    PASSPORT_TYPE,
    PassportReport,
    PassportSubject,
    ProvenanceViews,
    build_passport,
    verify_passport,
)
from sealtrail.scitt import ORG_RECORD_TYPE, ReceiptSigner, encode_key_set, key_id

from ._common import TokenFile, load, not_being_rebuilt, out, tls, user_token
from .scitt import (
    URL_ENV,
    AsJson,
    Force,
    _emit,
    _note,
    _read,
    _save,
    _say,
    _writable,
    read_service_keys,
)

__all__ = ["passport_app"]

passport_app = typer.Typer(
    help="Passports: one file with everything about a server or a device, verified offline.",
    no_args_is_help=True,
)

#: Seconds to wait for the service or the index (and for 503 answers to pass).
DEFAULT_TIMEOUT = 30.0
#: Longest verifier-key file read (a vkey is one short line).
MAX_VKEY_FILE = 4096
#: Where a route's answer is found, by subject.
_ROUTES = {"node": "/provenance/v1/passports/", "device": "/provenance/v1/device-passports/"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: What to do about a passport file of another subject than the one expected.
_WRONG_FILE_HINT = "It is another subject's passport: check the file, or where it came from."
#: What to do about a service's passport that fails, or is another subject's.
_SERVICE_HINT = "The service misbehaved or was tampered with; tell its operator."


# -- export ---------------------------------------------------------------------------------


@passport_app.command("export")
def export(
    subject: Annotated[
        str,
        typer.Argument(
            help="The server's (or any node's) serial; with --device the device id, or with "
            "--device --maker the maker's serial of the device.",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Where to write it (default: <SUBJECT>.passport.json)."
        ),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(help=f"A running service's base URL (default: ${URL_ENV})."),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            "-d",
            file_okay=False,
            help="Build it here, from this data directory (store, index and service key).",
        ),
    ] = None,
    token_file: TokenFile = None,
    device: Annotated[bool, typer.Option("--device", help="SUBJECT is a device.")] = False,
    maker: Annotated[
        str | None,
        typer.Option(help="With --device: SUBJECT is this maker's serial of the device."),
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the service or the index.")
    ] = DEFAULT_TIMEOUT,
    force: Force = False,
) -> None:
    """Write the passport of SUBJECT: its statements, their receipts against one checkpoint,
    the organizations' records, the log and service keys, sealed by the service.

    The file is verified before it is written (with this data directory's own keys pinned,
    for --data-dir).
    """
    if maker is not None and not device:
        raise InvalidInput("--maker goes with --device", code="device-lookup-invalid")
    if not timeout > 0:
        raise InvalidInput("--timeout must be a positive number of seconds")
    if url is not None and data_dir is not None:
        raise InvalidInput("give --url or --data-dir, not both")
    if url is None and data_dir is None:
        url = os.environ.get(URL_ENV) or None
        if url is None:
            raise InvalidInput(
                "give --url URL (a running service) or --data-dir DIR (this machine's data "
                f"directory), or set ${URL_ENV}"
            )
    if not device:
        target = PassportSubject.node(subject)
    elif maker is None:
        target = PassportSubject.device(subject)
    else:
        target = None  # looked up by maker and serial
        _lookup(maker, subject)
    path = output or Path(_file_name(subject))
    _writable(path, force=force)
    if data_dir is not None:
        config = load(data_dir)
        data, keys = _build_here(config, target, maker=maker, serial=subject, timeout=timeout)
        report = verify_passport(
            data, log_key=config.verifier_key(), service_keys=keys, subject=target
        )
        if maker is not None:
            _made_by(report, maker, subject)
    else:
        assert url is not None
        token = user_token(token_file)
        data = _fetch(url, target, maker=maker, serial=subject, token=token, timeout=timeout)
        report = _checked(data, target, maker=maker, serial=subject)
    _save(path, data, force=force)
    _say(str(path))
    _note(
        f"wrote {path}: passport of {_subject(report)}, {len(report.stages)} statement(s) "
        f"against checkpoint size {report.checkpoint_size} of {report.origin} "
        f"({len(data)} bytes)"
    )
    _note(f"log key {report.log_key}; service key(s) {_kids(report)}")
    _note(
        f"verify it anywhere: sealtrail passport verify {path} --log-key LOG.VKEY "
        "--service-keys KEYS.CBOR (the keys the operator publishes)"
    )


def _kids(report: PassportReport) -> str:
    return ", ".join(f"{kid[:16]}… {alg}" for kid, alg in report.service_keys)


def _file_name(subject: str) -> str:
    return (_UNSAFE.sub("_", subject).strip("._") or "passport")[:120] + ".passport.json"


def _checked(
    data: bytes, subject: PassportSubject | None, *, maker: str | None, serial: str
) -> PassportReport:
    """The service's answer, verified with the keys it carries (nothing pinned here): the
    passport of ``subject``, or of ``maker``'s device ``serial``."""
    try:
        report = verify_passport(data, subject=subject)
        if maker is not None:
            _made_by(report, maker, serial)
        return report
    except VerificationError as exc:
        if exc.code == "passport-subject-mismatch":
            what = "the service answered with the wrong passport"
        else:
            what = "the service's passport does not verify"
        raise VerificationError(
            f"{what}: {exc.message}",
            code=exc.code,
            hint=_SERVICE_HINT,
        ) from None


def _lookup(maker: str, serial: str) -> None:
    """A maker's name and its serial of a device, checked before any work."""
    if not maker or not maker.isprintable():
        raise InvalidInput("--maker must be printable text", code="maker-invalid")
    if not serial.isprintable():
        raise InvalidInput("a serial holds printable characters only", code="serial-invalid")


def _made_by(report: PassportReport, maker: str, serial: str) -> None:
    """Refuse a passport that is not of the device ``maker`` registered as ``serial``
    (its manifest, in the verified passport, names both)."""
    status = report.status
    if report.subject.kind == "device" and (status["maker"], status["serial"]) == (maker, serial):
        return
    raise VerificationError(
        f"the passport is of {_subject(report)}, not of the device with serial {serial!r} "
        f"from maker {maker!r}",
        code="passport-subject-mismatch",
        hint=_WRONG_FILE_HINT,
    )


def _build_here(
    config: Config,
    subject: PassportSubject | None,
    *,
    maker: str | None,
    serial: str,
    timeout: float,
) -> tuple[bytes, dict[bytes, Verifier]]:
    """The passport built here, and the service keys it was built with."""
    store = open_log_store(config)
    index = config.open_index()
    try:
        not_being_rebuilt(index, "the export")
        vkey = config.verifier_key()
        reader = LogReader(store, origin=config.origin, verifiers=[NoteVerifier.parse(vkey)])
        checkpoint = reader.checkpoint()
        views = ProvenanceViews(index)
        if subject is None:
            assert maker is not None
            subject = PassportSubject.device(views.find_device(maker, serial))
        if checkpoint is None:
            raise NotFound(
                f"the log is empty: no {subject.kind} has provenance yet",
                code=f"{subject.kind}-unknown",
            )
        deadline = time.monotonic() + timeout
        while index.applied_size() < checkpoint.size:
            if time.monotonic() >= deadline:
                raise RetryLater(
                    f"the provenance index has applied {index.applied_size()} of the log's "
                    f"{checkpoint.size} entries",
                    code="passport-index-behind",
                    hint="`sealtrail serve` indexes the log as it grows; with no server "
                    "running, run `sealtrail index rebuild`.",
                )
            time.sleep(0.05)
        signer = config.service_signer()
        keys: dict[bytes, Verifier] = {key_id(signer.verifier()): signer.verifier()}
        for retired in config.retired_verifiers():
            keys.setdefault(key_id(retired), retired)

        def statement(entry_id: bytes) -> bytes | None:
            record = store.get_statement(entry_id)
            return None if record is None else record.body

        data = build_passport(
            subject,
            views=views,
            statements=statement,
            org_records=lambda: [r.body for r in store.statements_of_type(ORG_RECORD_TYPE)],
            reader=reader,
            checkpoint=checkpoint,
            receipts=ReceiptSigner(signer, issuer=config.service_issuer, subject=config.origin),
            key_set=encode_key_set(keys.values()),
            verifier_key=vkey,
            seal=signer,
        )
        return data, keys
    finally:
        index.close()
        store.close()


def _fetch(
    url: str,
    subject: PassportSubject | None,
    *,
    maker: str | None,
    serial: str,
    timeout: float,
    token: str | None = None,
) -> bytes:
    """The passport from a service's route; 503 answers are waited out up to ``timeout``.

    ``token`` (SECRET, already checked for shape by ``user_token``) goes in every request."""
    try:
        base = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        base = None
    if base is None or base.scheme not in ("http", "https") or not base.host:
        raise InvalidInput(
            "the service URL must be an http:// or https:// URL with a host",
            code="url-invalid",
            hint="For example http://127.0.0.1:8080",
        )
    root = str(base).rstrip("/")
    if subject is None:
        where, params = root + _ROUTES["device"].rstrip("/"), {"maker": maker, "serial": serial}
    else:
        where, params = root + _ROUTES[subject.kind] + quote(subject.name, safe=""), {}
    deadline = time.monotonic() + timeout
    headers = {"Accept": PASSPORT_TYPE}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    with httpx.Client(timeout=timeout, headers=headers, verify=tls_for(base, tls())) as http:
        while True:
            status, body, retry_after, media = _get(http, where, params, timeout)
            if status == 200:
                if media != PASSPORT_TYPE:
                    raise ServiceError(f"the service answered {media or 'no media type'}")
                return body
            error = _error(status, body, where, retry_after)
            if isinstance(error, RetryLater) and time.monotonic() + retry_after < deadline:
                time.sleep(retry_after)
                continue
            raise error


def _get(
    http: httpx.Client, where: str, params: dict[str, str | None], timeout: float
) -> tuple[int, bytes, float, str]:
    try:
        with http.stream("GET", where, params=params) as response:
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_PASSPORT_SIZE:
                    raise TooLarge(f"the service's answer is over {MAX_PASSPORT_SIZE} bytes")
                chunks.append(chunk)
            media = response.headers.get("content-type", "").split(";")[0].strip()
            try:
                retry = min(max(float(response.headers.get("retry-after", "1")), 0.05), 30.0)
            except ValueError:
                retry = 1.0
            return response.status_code, b"".join(chunks), retry, media
    except httpx.TimeoutException:
        raise ServiceUnreachable(f"no answer from {where} within {timeout:g} s") from None
    except httpx.TransportError as exc:
        raise ServiceUnreachable(f"cannot reach {where}: {type(exc).__name__}") from None


def _error(  # noqa: PLR0911 (one return per status)
    status: int, body: bytes, where: str, retry_after: float = 1.0
) -> Error:
    """The error a problem-details answer stands for; the service's code is kept."""
    code, detail = None, None
    try:
        doc = json.loads(body)
        if isinstance(doc, dict):
            code = doc.get("code") if isinstance(doc.get("code"), str) else None
            detail = doc.get("detail") if isinstance(doc.get("detail"), str) else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        pass  # not problem details (a proxy's page, or too deep to read): the status speaks
    message = detail or f"HTTP {status} from {where}"
    if status == 401:
        return Unauthorized(message, code=code, hint=TOKEN_HINTS.get(code or ""))
    if status == 403:
        return Forbidden(message, code=code)
    if status == 404:
        return NotFound(message, code=code, hint=NOT_FOUND_HINTS.get(code or ""))
    if status == 429:
        return RateLimited(message, retry_after=retry_after, code=code)
    if status == 503:
        return RetryLater(message, code=code)
    if status == 413:
        return TooLarge(message, code=code)
    if 400 <= status < 500:
        return InvalidInput(message, code=code)
    return ServiceError(f"{message} (HTTP {status})", code=code)


# -- verify ---------------------------------------------------------------------------------


@passport_app.command("verify")
def verify(
    file: Annotated[Path, typer.Argument(help="A passport file.", show_default=False)],
    log_key: Annotated[
        str | None,
        typer.Option(
            help="The log's verifier key you trust (a vkey, or a file holding one: log.vkey)."
        ),
    ] = None,
    service_keys: Annotated[
        Path | None,
        typer.Option(help="The service's key set you trust (from `sealtrail fetch-keys`)."),
    ] = None,
    expect_node: Annotated[
        str | None,
        typer.Option(
            "--expect-node",
            metavar="SERIAL",
            help="Fail unless it is the passport of this server's (or node's) serial.",
        ),
    ] = None,
    expect_device: Annotated[
        str | None,
        typer.Option(
            "--expect-device",
            metavar="DEVICE",
            help="Fail unless it is the passport of this device: its id, or with --maker "
            "the maker's serial of the device.",
        ),
    ] = None,
    maker: Annotated[
        str | None,
        typer.Option(help="With --expect-device: DEVICE is this maker's serial of the device."),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Verify a passport offline and print the journey, or exit 1 naming what failed.

    Without --log-key and --service-keys the file can only be checked against the keys it
    carries: compare the printed fingerprints with the ones its operator publishes. A
    genuine passport of another server or device verifies too: say which one you expect
    with --expect-node or --expect-device.
    """
    if expect_node is not None and expect_device is not None:
        raise InvalidInput("give --expect-node or --expect-device, not both")
    if maker is not None and expect_device is None:
        raise InvalidInput("--maker goes with --expect-device", code="device-lookup-invalid")
    expected: PassportSubject | None = None
    if expect_node is not None:
        expected = PassportSubject.node(expect_node)
    elif expect_device is not None and maker is None:
        expected = PassportSubject.device(expect_device)
    elif expect_device is not None and maker is not None:
        _lookup(maker, expect_device)  # by its maker and serial: checked once verified
    data = _read(file, "passport", limit=MAX_PASSPORT_SIZE)
    pinned_log = _vkey(log_key) if log_key is not None else None
    pinned_keys = read_service_keys(service_keys) if service_keys is not None else None
    report = verify_passport(data, log_key=pinned_log, service_keys=pinned_keys, subject=expected)
    if maker is not None and expect_device is not None:
        _made_by(report, maker, expect_device)
    if as_json:
        _emit(report.to_json())
        return
    _print(report)


def _vkey(value: str) -> str:
    """A verifier key given as is, or as a file holding one; checked here, before any work.

    A private key file given by mistake is refused without a word of its content
    (``NoteVerifier.parse`` never echoes its input).
    """
    path = Path(value)
    if value.count("+") < 2 and path.is_file():  # a vkey is <name>+<id>+<key>
        text = _read(path, "verifier key", limit=MAX_VKEY_FILE).decode("utf-8", "replace").strip()
    else:
        text = value.strip()
    NoteVerifier.parse(text)
    return text


def _subject(report: PassportReport) -> str:
    if report.subject.kind == "device":
        return f"device {report.subject.name}"
    kind = report.status.get("type") or "node"
    return f"{kind} {report.subject.name}"


def _line(label: str, value: str, note: str = "", style: str = "") -> None:
    text = Text(f"{label:<13}", style="bold")
    text.append(value)
    if note:
        text.append(f"  {note}", style=style)
    out.print(text)


def _print(report: PassportReport) -> None:
    out.print(Text("OK", style="bold green") + Text(f"  passport of {_subject(report)}"))
    _line(
        "log",
        f"{report.origin}, checkpoint of {report.checkpoint_size} entries "
        f"(root {report.checkpoint_root.hex()[:16]}…)",
    )
    _line(
        "log key",
        report.log_key,
        *(
            ("pinned: the --log-key you gave", "green")
            if report.log_key_pinned
            else ("NOT pinned: compare it with the log's published key (--log-key)", "yellow")
        ),
    )
    _line("service", report.issuer, f"sealed {_time(report.sealed_at)} UTC")
    for kid, alg in report.service_keys:
        _line(
            "service key",
            f"{kid} {alg}",
            *(
                ("pinned: in --service-keys", "green")
                if report.service_keys_pinned
                else ("NOT pinned: compare with `sealtrail fetch-keys` (--service-keys)", "yellow")
            ),
        )
    for name, version, roles in report.organizations:
        _line("organization", f"{name} (record v{version}; {', '.join(roles) or 'no role'})")
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("time (UTC)", no_wrap=True)
    table.add_column("stage", no_wrap=True)
    table.add_column("org", no_wrap=True)
    table.add_column("what")
    for stage in report.stages:
        table.add_row(
            Text(str(stage.index)),
            Text(_time(stage.time)),
            Text(stage.stage),
            Text(stage.org),
            Text(stage.summary),
        )
    out.print(table)
    _line("now", _status(report))
    if report.outside:
        shown = ", ".join(report.outside[:6]) + (" …" if len(report.outside) > 6 else "")
        _line("outside", shown, "named by these facts, outside this passport: not judged")
    if not (report.log_key_pinned and report.service_keys_pinned):
        _note("note: with keys unpinned, this proves the file is consistent, not who made it")


def _time(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


def _status(report: PassportReport) -> str:
    status = report.status
    parts = []
    if report.subject.kind == "device":
        parts.append(f"{status.get('maker')}'s {status.get('kind')} {status.get('serial')}")
        for server, state in sorted((status.get("compliance") or {}).items()):
            parts.append(f"server {server}: {state}")
    else:
        if "compliance" in status:
            parts.append(f"compliance {status['compliance']}")
            parts.append(f"arrival {status.get('arrival') or '-'}")
            parts.append(f"attestation {status.get('attestation') or '-'}")
        parts.append(f"{len(status.get('devices') or [])} device(s)")
        if status.get("in_transit"):
            parts.append(f"in transit ({status['in_transit']})")
    if status.get("installed_in"):
        parts.append("in " + " < ".join(status["installed_in"]))
    return "; ".join(parts)
