"""The ``Accept`` header (RFC 9110 section 12.5.1), read strictly: which of a route's
representations a request prefers.

A request whose ``Accept`` is absent, empty or malformed (by the RFC's grammar) is answered
as if it had none: the route's default representation, never an error. What a request
prefers is decided the RFC's way: a representation's quality is that of the most specific
media range that matches it (``type/subtype`` before ``type/*`` before ``*/*``; among ranges
of the same specificity, the highest ``q``), and ``q=0`` means "not acceptable". Media type
parameters other than ``q`` are read (so that a quoted ``,`` or ``;`` in one cannot split the
header) but do not change which representation a range matches: no representation served
here has parameters to tell apart.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.types import Scope

__all__ = ["MediaRange", "accept_header", "parse_accept", "preferred", "quality"]

#: RFC 9110 section 5.6.2 (token), 5.6.4 (quoted-string), 5.6.6 (parameters), 12.4.2 (qvalue).
_TCHARS = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_PARAMETER = re.compile(rf"[ \t]*;[ \t]*(?:({_TCHARS})=({_TCHARS}|{_QUOTED}))?")
_PARAMETERS = rf"(?:[ \t]*;[ \t]*(?:{_TCHARS}=(?:{_TCHARS}|{_QUOTED}))?)*"
_RANGE = re.compile(rf"({_TCHARS})/({_TCHARS})({_PARAMETERS})")
_QVALUE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")
_OWS = " \t"


@dataclass(frozen=True)
class MediaRange:
    """One element of an ``Accept`` header: ``type/subtype`` (lowercase; either may be
    ``*``) and its weight in thousandths (``q=0.5`` is 500; no ``q`` is 1000)."""

    type: str
    subtype: str
    weight: int = 1000


def accept_header(scope: Scope) -> str | None:
    """The request's ``Accept`` field value, its lines joined as HTTP joins them (a list
    sent over several lines is one list); ``None`` without one."""
    values = [v for k, v in scope.get("headers", ()) if k == b"accept"]
    if not values:
        return None
    return ", ".join(v.decode("latin-1") for v in values)


def parse_accept(value: str) -> list[MediaRange] | None:
    """The media ranges of an ``Accept`` field value, in order; ``None`` if it is not one
    (RFC 9110's grammar: ``#( media-range [ weight ] )``, empty list elements allowed)."""
    ranges: list[MediaRange] = []
    pos, end = 0, len(value)
    while True:
        # Empty list elements and the whitespace around elements (RFC 9110 section 5.6.1).
        while pos < end and value[pos] in " \t,":
            pos += 1
        if pos == end:
            return ranges
        match = _RANGE.match(value, pos)
        if match is None:
            return None
        kind, subtype = match[1].lower(), match[2].lower()
        if kind == "*" and subtype != "*":
            return None
        weight = 1000
        for parameter in _PARAMETER.finditer(match[3]):
            name, argument = parameter[1], parameter[2]
            if name is not None and name.lower() == "q":
                if not _QVALUE.fullmatch(argument):
                    return None
                weight = round(float(argument) * 1000)
                break  # what follows the weight is no media type parameter (RFC 9110)
        ranges.append(MediaRange(kind, subtype, weight))
        pos = match.end()
        while pos < end and value[pos] in _OWS:
            pos += 1
        if pos < end and value[pos] != ",":
            return None


def quality(ranges: Sequence[MediaRange], media_type: str) -> tuple[int, int]:
    """``(weight, specificity)`` of ``media_type`` under ``ranges``: the weight of the most
    specific range that matches it (specificity 2 ``type/subtype``, 1 ``type/*``, 0
    ``*/*``), or ``(0, -1)`` when none does."""
    kind, _, subtype = media_type.partition("/")
    best = (-1, 0)
    for r in ranges:
        if r.type == kind and r.subtype == subtype:
            specificity = 2
        elif r.type == kind and r.subtype == "*":
            specificity = 1
        elif r.type == "*":
            specificity = 0
        else:
            continue
        best = max(best, (specificity, r.weight))
    return best[1], best[0]


def preferred(accept: str | None, offers: Sequence[str]) -> str:
    """Which of ``offers`` (media types, the default first) a request with ``accept``
    prefers: the highest weight, then the most specific range, then the earlier offer. The
    default when the header is absent, malformed, or accepts none of them (the route then
    answers its default rather than 406)."""
    ranges = None if accept is None else parse_accept(accept)
    if not ranges:
        return offers[0]
    best, choice = (0, -1), offers[0]
    for offer in offers:
        rank = quality(ranges, offer)
        if rank[0] > 0 and rank > best:
            best, choice = rank, offer
    return choice
