"""The journey of a fleet, through a running service's HTTP API, as its users would make it.

The administrator onboards every organization (``PUT /admin/organizations/{name}``, as
``sealtrail org put``), then makes one user per organization with the persona its role
needs (``PUT /admin/users/{name}``: makers and the assembler suppliers, the carrier a
carrier, the operator an operator) and issues each a token valid :data:`TOKEN_DAYS`
(``POST /admin/users/{name}/tokens``, as ``sealtrail users``). Then each organization's
user registers its signed statements (``POST /entries``, with an
:class:`sealtrail.client.AsyncClient` holding its token), phase after phase:

======================  ===========  =========================================================
phase                   who          what, per
======================  ===========  =========================================================
firmware                makers       a firmware release, per image
manifests               makers       device manifests, per rack and maker
boards                  assembler    devices into each motherboard and blade
servers                 assembler    motherboard and blades into each server
racks                   assembler    servers into each rack
shipped                 carrier      each rack shipped, sealed
in-transit              operator     each server registered -> in-transit
received                carrier      each rack received, seals as found
arrival                 operator     each server checked: every device challenged
arrived                 operator     each server in-transit -> arrived
attestation             operator     each server attested: every device's evidence
verified                operator     each server arrived -> verified
production              operator     each server verified -> production
======================  ===========  =========================================================

Within a phase the statements are independent and go out concurrently (at most
``concurrency`` at a time); a phase starts when the one before has every receipt. The
nonces of an arrival's challenges and of an attestation are the service's own: asked for
(``POST /provenance/v1/challenges``, by the operator's user) just before the devices answer
them. Back-pressure (HTTP 503) is waited out and the same statement sent again
(registration is idempotent).

Users are named ``<organization>-<persona>`` (organization names carry the seed's
namespace, so fleets of different seeds never share a user) and made with a request that
creates or updates, so a journey over users an earlier run made works; every run issues
each user a new token (a user holds at most 16: :func:`issue_tokens`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from sealtrail.client import AsyncClient, RegisteredStatement
from sealtrail.errors import Error, RetryLater
from sealtrail.provenance import ComplianceState, CustodyEvent, Node, NodeType, Payload

from ._actors import Actor
from ._fleet import Fleet, Progress, RackPlan, ServerPlan

__all__ = [
    "DEFAULT_CONCURRENCY",
    "PERSONAS",
    "PHASES",
    "TOKEN_DAYS",
    "FleetTokens",
    "JourneyReport",
    "PhaseTiming",
    "Step",
    "StepRefused",
    "auditor_name",
    "issue_tokens",
    "journey_steps",
    "register_steps",
    "run_journey",
    "user_name",
]

PHASES = (
    "organizations",
    "firmware",
    "manifests",
    "boards",
    "servers",
    "racks",
    "shipped",
    "in-transit",
    "received",
    "arrival",
    "arrived",
    "attestation",
    "verified",
    "production",
)
#: Statements in flight at once: enough for the sequencer to batch them.
DEFAULT_CONCURRENCY = 32
#: Seconds one HTTP exchange (and one registration) may take.
DEFAULT_TIMEOUT = 60.0
#: Times a statement is sent again after back-pressure (503), and the longest wait.
MAX_RETRIES = 20
MAX_RETRY_WAIT = 5.0
#: The persona of each organization role's user (docs/auth.md: who may register what).
PERSONAS: Mapping[str, str] = {
    "device-maker": "supplier",
    "assembler": "supplier",
    "carrier": "carrier",
    "operator": "operator",
}
#: Days a token the simulator issues stays valid: a run takes minutes.
TOKEN_DAYS = 1
S = ComplianceState


class StepRefused(Error):
    """The service refused one of the journey's statements; ``code`` is the service's."""

    code = "sim-step-refused"
    hint = (
        "A fleet's names are derived from its seed: on a ledger that already holds this "
        "seed's fleet, run with another --seed (or a fresh data directory)."
    )


#: Makes a step's payload when it is sent (it may ask the service for nonces).
Build = Callable[[AsyncClient], Awaitable[Payload]]


@dataclass(frozen=True, slots=True)
class Step:
    """One statement: who states what about what. ``build`` runs when it is sent."""

    label: str
    actor: Actor
    build: Build
    about: str
    issued_at: int | None = None


def user_name(actor: Actor) -> str:
    """The user who acts for ``actor``'s organization: ``<organization>-<persona>``."""
    return f"{actor.name}-{PERSONAS[actor.ROLE]}"


def auditor_name(fleet: Fleet) -> str:
    """The fleet's auditor (who reads the views and passports): ``<namespace>-auditor``."""
    return f"{fleet.namespace}-auditor"


@dataclass(frozen=True)
class FleetTokens:
    """The bearer tokens of a fleet's users (SECRET: kept out of ``repr``; never print or
    log them): ``actors`` by organization name, and an auditor's if one was made."""

    actors: Mapping[str, str] = field(default_factory=dict, repr=False)
    auditor: str | None = field(default=None, repr=False)

    def of(self, actor: Actor) -> str | None:
        """The token of ``actor``'s organization's user, if any."""
        return self.actors.get(actor.name)


async def _make_users(
    client: AsyncClient,
    fleet: Fleet,
    *,
    admin_token: str,
    auditor: bool,
    days: int,
) -> tuple[FleetTokens, int]:
    """Make (or update) the fleet's users and issue each a token: the tokens, and the
    records registered. One request at a time: each builds on the user's record before it."""
    actors: dict[str, str] = {}
    records = 0

    async def user(name: str, persona: str, org: str | None) -> str:
        nonlocal records
        try:
            await client.put_user(name, persona, org, token=admin_token)
            issued = await client.issue_token(name, days, token=admin_token)
        except Error as exc:
            raise StepRefused(f"user {name}: {exc.message}", code=exc.code) from None
        records += 2
        return issued.token

    for actor in fleet.actors:
        actors[actor.name] = await user(user_name(actor), PERSONAS[actor.ROLE], actor.name)
    found = await user(auditor_name(fleet), "auditor", None) if auditor else None
    return FleetTokens(actors, found), records


async def issue_tokens(
    fleet: Fleet,
    url: str,
    *,
    admin_token: str,
    auditor: bool = False,
    days: int = TOKEN_DAYS,
    timeout: float = DEFAULT_TIMEOUT,
) -> FleetTokens:
    """Make (or update) a user per organization of the fleet, its persona the one its role
    needs (:data:`PERSONAS`, named by :func:`user_name`), and with ``auditor`` an auditor
    (:func:`auditor_name`); issue each a new token valid ``days``, with the administrator
    token. The organizations must be onboarded. Every call issues new tokens: a user holds
    at most 16 (``too-many-tokens``), so revoke old ones (``sealtrail users revoke``) on a
    ledger used that often. Raises :class:`StepRefused` with the service's code."""
    async with AsyncClient(url, timeout=timeout) as client:
        tokens, _ = await _make_users(
            client, fleet, admin_token=admin_token, auditor=auditor, days=days
        )
    return tokens


@dataclass(frozen=True, slots=True)
class PhaseTiming:
    name: str
    statements: int
    seconds: float


@dataclass
class JourneyReport:
    """What a journey registered, and how long each phase took (a phase's ``statements``
    are the log entries it added: for ``users``, a user record per user and one per token
    issued)."""

    organizations: int = 0
    users: int = 0
    statements: int = 0
    seconds: float = 0.0
    phases: list[PhaseTiming] = field(default_factory=list)
    #: Every registered statement with its receipt, by step label.
    registered: dict[str, RegisteredStatement] = field(default_factory=dict, repr=False)

    @property
    def statements_per_s(self) -> float:
        return self.statements / self.seconds if self.seconds > 0 else 0.0

    @property
    def entries(self) -> int:
        """Log entries the journey added: organization and user records, statements."""
        return sum(p.statements for p in self.phases)

    def to_json(self) -> dict[str, object]:
        return {
            "organizations": self.organizations,
            "users": self.users,
            "statements": self.statements,
            "entries": self.entries,
            "seconds": round(self.seconds, 3),
            "statements_per_s": round(self.statements_per_s, 1),
            "phases": [
                {"name": p.name, "statements": p.statements, "seconds": round(p.seconds, 3)}
                for p in self.phases
            ],
        }


def _fixed(payload: Payload) -> Build:
    async def build(_: AsyncClient) -> Payload:
        return payload

    return build


def _server_steps(fleet: Fleet, rack: RackPlan, server: ServerPlan) -> dict[str, list[Step]]:
    asm, op = fleet.assembler, fleet.operator
    serial = server.serial
    board = Node(NodeType.MOTHERBOARD, server.motherboard)
    blades = [Node(NodeType.BLADE, b) for b, _ in server.blades]
    steps: dict[str, list[Step]] = {
        "boards": [
            Step(
                f"board {board.serial}",
                asm,
                _fixed(asm.assemble(board, server.board_devices)),
                board.serial,
            ),
            *(
                Step(f"blade {b}", asm, _fixed(asm.assemble(Node(NodeType.BLADE, b), devices)), b)
                for b, devices in server.blades
            ),
        ],
        "servers": [
            Step(
                f"server {serial}",
                asm,
                _fixed(asm.assemble(Node(NodeType.SERVER, serial), [board, *blades])),
                serial,
            )
        ],
    }
    for phase, start, to in (
        ("in-transit", S.REGISTERED, S.IN_TRANSIT),
        ("arrived", S.IN_TRANSIT, S.ARRIVED),
        ("verified", S.ARRIVED, S.VERIFIED),
        ("production", S.VERIFIED, S.PRODUCTION),
    ):
        steps[phase] = [
            Step(f"{phase} {serial}", op, _fixed(op.move(serial, start, to, _REASONS[to])), serial)
        ]

    async def arrival(client: AsyncClient) -> Payload:
        nonces = await client.challenge(serial, len(server.devices))
        return op.arrival(
            shipment_id=rack.shipment_id,
            server_serial=serial,
            devices=server.devices,
            nonces=nonces,
        )

    async def attestation(client: AsyncClient) -> Payload:
        (nonce,) = await client.challenge(serial)
        return op.attestation(serial, op.challenge(server.devices, nonce), nonce)

    steps["arrival"] = [Step(f"arrival {serial}", op, arrival, serial)]
    steps["attestation"] = [Step(f"attestation {serial}", op, attestation, serial)]
    return steps


_REASONS = {
    S.IN_TRANSIT: "shipped from the integrator",
    S.ARRIVED: "arrival check passed",
    S.VERIFIED: "attestation affirming",
    S.PRODUCTION: "admitted to production",
}


def journey_steps(fleet: Fleet, *, releases: bool = True) -> dict[str, list[Step]]:
    """Every statement of the fleet's journey, by phase (see the module docs)."""
    phases: dict[str, list[Step]] = {p: [] for p in PHASES[1:]}
    if releases:
        phases["firmware"] = [
            Step(f"release {r.component} {r.version}", maker, _fixed(r), f"firmware/{r.component}")
            for maker in fleet.makers.values()
            for r in maker.releases()
        ]
    phases["manifests"] = [
        Step(f"manifest {m.batch_id}", maker, _fixed(m), f"batch/{m.batch_id}")
        for maker, m in fleet.manifests()
    ]
    asm, carrier = fleet.assembler, fleet.carrier
    for rack in fleet.racks:
        for server in rack.servers:
            for phase, steps in _server_steps(fleet, rack, server).items():
                phases[phase] += steps
        node = Node(NodeType.RACK, rack.serial)
        servers = [Node(NodeType.SERVER, s.serial) for s in rack.servers]
        phases["racks"].append(
            Step(f"rack {rack.serial}", asm, _fixed(asm.assemble(node, servers)), rack.serial)
        )
        for event in (CustodyEvent.SHIPPED, CustodyEvent.RECEIVED):
            custody = carrier.custody(
                event,
                shipment_id=rack.shipment_id,
                contents=[rack.serial],
                seals=rack.seals,
                from_org=asm.name,
                to_org=fleet.operator.name,
                place=rack.place,
            )
            phases[event.value].append(
                Step(
                    f"{event.value} {rack.shipment_id}", carrier, _fixed(custody), rack.shipment_id
                )
            )
    return phases


async def register_steps(
    clients: Mapping[str, AsyncClient],
    steps: Sequence[Step],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    done: Callable[[], None] | None = None,
) -> dict[str, RegisteredStatement]:
    """Register every step's statement, at most ``concurrency`` at a time, each (and the
    challenges its payload asks for) through ``clients[step.actor.name]``: a client holding
    the token of that organization's user."""
    gate = asyncio.Semaphore(concurrency)
    found: dict[str, RegisteredStatement] = {}

    async def one(step: Step) -> None:
        client = clients[step.actor.name]
        async with gate:
            payload = await _retrying(lambda: step.build(client), step.label)
            data = step.actor.sign(payload, about=step.about, issued_at=step.issued_at)
            found[step.label] = await _register(client, data, step.label)
            if done is not None:
                done()

    tasks = [asyncio.ensure_future(one(step)) for step in steps]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return found


_T = TypeVar("_T")


async def _register(client: AsyncClient, data: bytes, label: str) -> RegisteredStatement:
    return await _retrying(lambda: client.register(data), label)


async def _retrying(call: Callable[[], Awaitable[_T]], label: str) -> _T:
    """``call()``, again after back-pressure (HTTP 503); any other error names the step."""
    retries = 0
    while True:
        try:
            return await call()
        except RetryLater as exc:
            if retries == MAX_RETRIES:
                raise StepRefused(
                    f"{label}: still refused after {retries} retries", code=exc.code
                ) from None
            retries += 1
            wait = min(max(exc.retry_after or 0.1, 0.05), MAX_RETRY_WAIT)
            await asyncio.sleep(wait * random.uniform(0.5, 1.0))  # noqa: S311 - jitter
        except Error as exc:
            raise StepRefused(f"{label}: {exc.message}", code=exc.code) from None


async def run_journey(
    fleet: Fleet,
    url: str,
    *,
    admin_token: str | None = None,
    tokens: FleetTokens | None = None,
    progress: Progress | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout: float = DEFAULT_TIMEOUT,
    onboard: bool = True,
    releases: bool = True,
    until: str | None = None,
) -> JourneyReport:
    """Run the fleet's journey against the service at ``url`` (see the module docs).

    ``admin_token`` onboards the organizations (skipped with ``onboard=False``, for
    organizations already onboarded). Each organization's statements go out with its
    user's token: ``tokens`` when given (:func:`issue_tokens`); else, with
    ``admin_token``, the journey makes (or updates) the users and issues each a new token
    (the ``users`` phase of the report), with ``onboard=False`` too; with neither, the
    statements go out without a token, which only a service with ``[auth] required =
    false`` takes. ``releases=False`` leaves out the firmware releases (already
    registered); ``until`` stops after that phase. ``progress`` is called as ``(phase,
    statements done, statements in all)``.
    """
    if until is not None and until not in PHASES:
        raise ValueError(f"no phase {until!r}")
    if onboard and admin_token is None:
        raise ValueError("onboarding the organizations needs the administrator token")
    phases = journey_steps(fleet, releases=releases)
    names = list(PHASES[1:] if until is None else PHASES[1 : PHASES.index(until) + 1])
    make_users = tokens is None and admin_token is not None and bool(names)
    total = (
        sum(len(phases[n]) for n in names)
        + (len(fleet.actors) if onboard else 0)
        + (len(fleet.actors) if make_users else 0)
    )
    report = JourneyReport()
    counter = [0]

    def tick(phase: str) -> None:
        counter[0] += 1
        if progress is not None:
            progress(phase, counter[0], total)

    started = time.perf_counter()
    async with contextlib.AsyncExitStack() as stack:
        # No token of its own: administration sends the administrator token per request,
        # and organizations without a token of their own register through it.
        plain = await stack.enter_async_context(AsyncClient(url, timeout=timeout))
        if onboard:
            assert admin_token is not None
            begun = time.perf_counter()
            for actor in fleet.actors:
                try:
                    await plain.put_organization(actor.name, actor.record(), token=admin_token)
                except Error as exc:
                    raise StepRefused(
                        f"organization {actor.name}: {exc.message}", code=exc.code
                    ) from None
                tick("organizations")
            report.organizations = len(fleet.actors)
            report.phases.append(
                PhaseTiming("organizations", len(fleet.actors), time.perf_counter() - begun)
            )
        if make_users:
            assert admin_token is not None
            begun = time.perf_counter()
            tokens, records = await _make_users(
                plain, fleet, admin_token=admin_token, auditor=False, days=TOKEN_DAYS
            )
            for _ in fleet.actors:
                tick("users")
            report.users = len(fleet.actors)
            report.phases.append(PhaseTiming("users", records, time.perf_counter() - begun))
        clients: dict[str, AsyncClient] = {}
        for actor in fleet.actors:
            token = None if tokens is None else tokens.of(actor)
            clients[actor.name] = (
                plain
                if token is None
                else await stack.enter_async_context(AsyncClient(url, token=token, timeout=timeout))
            )
        for name in names:
            begun = time.perf_counter()
            report.registered |= await register_steps(
                clients, phases[name], concurrency=concurrency, done=functools.partial(tick, name)
            )
            report.phases.append(PhaseTiming(name, len(phases[name]), time.perf_counter() - begun))
            report.statements += len(phases[name])
    report.seconds = time.perf_counter() - started
    return report
