"""Devices made once per test session: a maker of each kind, and one device of each
identity (making them costs key derivations and certificates)."""

from __future__ import annotations

import functools

from sealtrail.provenance import Algorithm, DeviceKind
from sealtrail.sim import ML_DSA_SUPPORTED, DeviceMaker, RotDevice
from sealtrail.sim._fleet import firmware_for

NAMESPACE = "t1"


@functools.cache
def maker(kind: DeviceKind) -> DeviceMaker:
    return DeviceMaker(
        f"{NAMESPACE}-{kind.value}", kind=kind, firmware=firmware_for(NAMESPACE)[kind]
    )


@functools.cache
def device(kind: DeviceKind, algorithm: Algorithm | None = None) -> RotDevice:
    suffix = algorithm.value if algorithm is not None else "default"
    return maker(kind).manufacture(f"{kind.value}-{suffix}", algorithm=algorithm)


def every_identity() -> list[tuple[DeviceKind, Algorithm | None]]:
    found: list[tuple[DeviceKind, Algorithm | None]] = [
        (DeviceKind.CALIPTRA, Algorithm.ES384),
        (DeviceKind.CERBERUS, None),
        (DeviceKind.TPM, None),
    ]
    if ML_DSA_SUPPORTED:
        found.append((DeviceKind.CALIPTRA, Algorithm.ML_DSA_87))
    return found
