"""A server's compliance state machine: which state changes a compliance statement may say.

Every change is a statement with its reason; this table says which are meaningful. Whether
the change starts from the server's *current* state, and whether a passing attestation
backs a move to ``verified``, needs the log and is checked when the statement is indexed.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

from sealtrail.errors import InvalidInput

__all__ = [
    "ATTESTED_STATES",
    "TRANSITIONS",
    "ComplianceState",
    "check_transition",
    "stale_reason",
]


class ComplianceState(StrEnum):
    """Where a server is in its life, from registration to eviction."""

    REGISTERED = "registered"
    IN_TRANSIT = "in-transit"
    ARRIVED = "arrived"
    VERIFIED = "verified"
    PRODUCTION = "production"
    NON_COMPLIANT = "non-compliant"
    QUARANTINED = "quarantined"
    UNDER_INVESTIGATION = "under-investigation"
    IN_REMEDIATION = "in-remediation"
    EVICTED = "evicted"


_S = ComplianceState

#: state -> the states a compliance statement may move it to. ``production`` is reached only
#: from ``verified`` (a passing attestation); ``evicted`` is final.
TRANSITIONS: Mapping[ComplianceState, frozenset[ComplianceState]] = MappingProxyType(
    {
        _S.REGISTERED: frozenset({_S.IN_TRANSIT, _S.NON_COMPLIANT}),
        _S.IN_TRANSIT: frozenset({_S.ARRIVED, _S.NON_COMPLIANT}),
        _S.ARRIVED: frozenset({_S.VERIFIED, _S.NON_COMPLIANT}),
        _S.VERIFIED: frozenset({_S.PRODUCTION, _S.IN_TRANSIT, _S.NON_COMPLIANT}),
        _S.PRODUCTION: frozenset({_S.IN_TRANSIT, _S.NON_COMPLIANT}),
        _S.NON_COMPLIANT: frozenset(
            {_S.QUARANTINED, _S.UNDER_INVESTIGATION, _S.IN_REMEDIATION, _S.EVICTED}
        ),
        _S.QUARANTINED: frozenset({_S.UNDER_INVESTIGATION, _S.IN_REMEDIATION, _S.EVICTED}),
        _S.UNDER_INVESTIGATION: frozenset(
            {_S.QUARANTINED, _S.IN_REMEDIATION, _S.VERIFIED, _S.EVICTED}
        ),
        _S.IN_REMEDIATION: frozenset({_S.UNDER_INVESTIGATION, _S.VERIFIED, _S.EVICTED}),
        _S.EVICTED: frozenset(),
    }
)


def check_transition(from_state: ComplianceState, to_state: ComplianceState) -> None:
    """Raise :class:`InvalidInput` (``compliance-bad-transition``) unless the table allows it."""
    if to_state not in TRANSITIONS[from_state]:
        raise InvalidInput(
            f"compliance: a server cannot move from {from_state.value} to {to_state.value}",
            code="compliance-bad-transition",
            hint="See the compliance state machine in docs/provenance.md.",
        )


#: States ``compliance sweep`` watches: a server in them must keep attesting.
ATTESTED_STATES = frozenset({ComplianceState.VERIFIED, ComplianceState.PRODUCTION})


def stale_reason(
    state: ComplianceState,
    attestation: Mapping[str, object] | None,
    *,
    now: int,
    max_age: int,
) -> str | None:
    """Why a server in ``state`` with this latest attestation row (``status``, ``iat``) is
    stale at ``now`` — no affirming attestation within ``max_age`` seconds — or None."""
    if state not in ATTESTED_STATES:
        return None
    if attestation is None:
        return "no attestation on record"
    if attestation.get("status") != "affirming":
        return f"latest attestation is {attestation.get('status')}"
    iat = attestation.get("iat")
    if not isinstance(iat, int) or now - iat > max_age:
        return f"latest passing attestation is older than {max_age} s"
    return None
