"""The simulator: a supply chain's organizations and devices, its journey and its attacks.

It acts as real users would, through the public API only: devices and organizations make
their own keys and certificates, organizations are onboarded with the administrator token,
each gets a user with the persona its role needs and a token of its own
(:func:`issue_tokens`, docs/auth.md), and registers every fact as a signed statement over
HTTP with it (:mod:`sealtrail.client`).

* Devices (:class:`RotDevice`): Caliptra-like (a DICE chain IDevID → LDevID → FMC alias →
  runtime alias, ECC P-384 and ML-DSA-87, TCG ``DiceTcbInfo`` with the firmware
  measurements in the alias certificates), Cerberus-like and TPM-like (EK certificate).
  Each answers a challenge with evidence over the verifier's nonce; its private keys never
  leave it.
* Organizations (:class:`Actor`): device makers with their device identity CAs, an
  assembler, a carrier and a data center operator, each with its own CA and signing
  certificate.
* A fleet (:func:`generate_fleet`, :class:`FleetSpec`): racks, servers and devices,
  deterministic for a seed; :func:`run_journey` takes it from the makers' manifests to
  production through a running service.
* Attacks (:data:`ATTACKS`, :func:`run_attacks`): named scenarios, each stating what
  Sealtrail must report, run against the live service (docs/demo.md).
"""

from __future__ import annotations

from ._actors import Actor, Answer, Assembler, Carrier, DeviceMaker, Operator
from ._attacks import ATTACKS, AttackLab, AttackResult, run_attacks
from ._devices import (
    CaliptraDevice,
    CerberusDevice,
    FirmwareImage,
    IdentityProfile,
    RotDevice,
    TpmDevice,
)
from ._dice import (
    TCB_INFO_OID,
    UEID_OID,
    Fwid,
    TcbInfo,
    decode_tcb_info,
    decode_ueid,
    encode_tcb_info,
    encode_ueid,
    tcb_info_of,
)
from ._evidence import Evidence, ReportedMeasurement, evidence_message
from ._fleet import Fleet, FleetSpec, Progress, RackPlan, ServerPlan, generate_fleet
from ._journey import (
    DEFAULT_CONCURRENCY,
    PERSONAS,
    PHASES,
    TOKEN_DAYS,
    FleetTokens,
    JourneyReport,
    PhaseTiming,
    StepRefused,
    auditor_name,
    issue_tokens,
    run_journey,
    user_name,
)
from ._verifier import check_evidence
from ._x509 import ML_DSA_SUPPORTED

__all__ = [
    "ATTACKS",
    "DEFAULT_CONCURRENCY",
    "ML_DSA_SUPPORTED",
    "PERSONAS",
    "PHASES",
    "TCB_INFO_OID",
    "TOKEN_DAYS",
    "UEID_OID",
    "Actor",
    "Answer",
    "Assembler",
    "AttackLab",
    "AttackResult",
    "CaliptraDevice",
    "Carrier",
    "CerberusDevice",
    "DeviceMaker",
    "Evidence",
    "FirmwareImage",
    "Fleet",
    "FleetSpec",
    "FleetTokens",
    "Fwid",
    "IdentityProfile",
    "JourneyReport",
    "Operator",
    "PhaseTiming",
    "Progress",
    "RackPlan",
    "ReportedMeasurement",
    "RotDevice",
    "ServerPlan",
    "StepRefused",
    "TcbInfo",
    "TpmDevice",
    "auditor_name",
    "check_evidence",
    "decode_tcb_info",
    "decode_ueid",
    "encode_tcb_info",
    "encode_ueid",
    "evidence_message",
    "generate_fleet",
    "issue_tokens",
    "run_attacks",
    "run_journey",
    "tcb_info_of",
    "user_name",
]
