"""Sealtrail's one exception tree.

Every failure a caller can act on is one of these. Each carries a stable ``code`` (used
verbatim in HTTP problem details and CLI messages) and a human ``hint`` saying what to do.
Verification never returns ``False``: it raises a :class:`VerificationError`.

::

    Error                         base; .code, .hint, .diagnostics()
    ├── InvalidInput              the caller sent something malformed          -> 400
    │   └── TooLarge              over a documented size or count limit        -> 413
    ├── Unauthorized              a missing, unknown, revoked or expired token -> 401
    ├── Forbidden                 a principal without the right to do this     -> 403
    ├── NotFound                  no such entry, tile or proof (yet)           -> 404
    ├── VerificationError         a proof, signature or note does not verify
    │   ├── InvalidProof          inclusion / consistency proof rejected
    │   ├── InvalidSignature      no trusted signature verifies
    │   └── MalformedNote         a signed note or checkpoint is not well-formed
    ├── RetryLater                back-pressure: try again after .retry_after  -> 503
    │   └── RateLimited           this client is over its request budget       -> 429
    ├── Conflict                  lost a compare-and-swap race
    │   ├── CheckpointConflict    another sequencer moved the log's checkpoint
    │   └── Fenced                this process no longer holds the sequencer role
    ├── StorageError              the store failed; the sequencer stops and reloads
    │   └── Corruption            stored data contradicts the signed checkpoint
    └── ConfigError               bad or missing configuration / data directory

The pure core :mod:`sealtrail.merkle` imports nothing of ours, so it raises its own
:class:`sealtrail.merkle.MerkleError` family. Those are hazmat-layer errors: the recipes in
:mod:`sealtrail.log` translate them into :class:`InvalidProof` / :class:`MalformedNote`.
"""

from __future__ import annotations

__all__ = [
    "CheckpointConflict",
    "ConfigError",
    "Conflict",
    "Corruption",
    "Error",
    "Fenced",
    "Forbidden",
    "InvalidInput",
    "InvalidProof",
    "InvalidSignature",
    "MalformedNote",
    "NotFound",
    "RateLimited",
    "RetryLater",
    "StorageError",
    "TooLarge",
    "Unauthorized",
    "VerificationError",
]


class Error(Exception):
    """Base of every Sealtrail error.

    ``code`` is stable across releases (clients may switch on it); ``hint`` tells a human
    what to do about it. Messages never contain secrets or statement contents.
    """

    code: str = "error"
    hint: str = "See the message for details."

    def __init__(self, message: str, *, hint: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint
        if code is not None:
            # A more precise stable code than the class's (e.g. "cose-bad-signature").
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code

    def diagnostics(self) -> str:
        """A short, multi-line explanation for a terminal."""
        return f"{self.message}\nhint: {self.hint}"


class InvalidInput(Error):
    code = "invalid-input"
    hint = "Check the request against the documented format."


class TooLarge(InvalidInput):
    code = "too-large"
    hint = "Stay within the documented limit."


class Unauthorized(Error):
    code = "unauthorized"
    hint = (
        "Send the administrator token as 'Authorization: Bearer <token>'; "
        "the server's operator issues it."
    )


class Forbidden(Error):
    """Authenticated, but this principal may not do this (docs/auth.md)."""

    code = "forbidden"
    hint = "Ask an administrator for a user with the right persona and organization."


class NotFound(Error):
    code = "not-found"
    hint = "Check the index or size against the latest checkpoint."


class VerificationError(Error):
    code = "verification-failed"
    hint = "Do not trust the data: it does not match what the log committed to."
    #: A registration check refused it on the issuer's organization record as this process
    #: knows it: on a shared store a newer one may answer otherwise (``check_current``).
    depends_on_organizations = False


class InvalidProof(VerificationError):
    code = "invalid-proof"


class InvalidSignature(VerificationError):
    code = "invalid-signature"
    hint = "Check that you hold the right public key for this log or witness."


class MalformedNote(VerificationError):
    code = "malformed-note"
    hint = "The text is not a well-formed signed note / checkpoint."


class RetryLater(Error):
    """Back-pressure. Nothing was accepted; the same request may succeed later."""

    code = "retry-later"
    hint = "The log is busy; retry after the indicated delay."

    def __init__(
        self,
        message: str,
        *,
        retry_after: float = 1.0,
        hint: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint, code=code)
        self.retry_after = retry_after


class RateLimited(RetryLater):
    """This client sent more requests than its budget allows (``[server] rate_limit_*``).

    Nothing was done; the same request may succeed after ``retry_after`` seconds.
    """

    code = "rate-limited"
    hint = "Too many requests from this client; retry after the indicated delay."


class Conflict(Error):
    code = "conflict"


class CheckpointConflict(Conflict):
    """The checkpoint was not the expected one: another sequencer advanced the log.

    Nothing of the losing batch was written. The loser reloads and retries.
    """

    code = "checkpoint-conflict"
    hint = "Another sequencer holds the log; reload and retry."


class Fenced(Conflict):
    """A commit carried the fencing epoch of a sequencer role that has passed to another
    process. Nothing was written; this process must stop sequencing (it may bid again)."""

    code = "sequencer-fenced"
    hint = "Another process holds the sequencer role; retry, it will sequence the entry."


class StorageError(Error):
    code = "storage-error"
    hint = "The store failed; the operation may be retried once it is healthy."


class Corruption(StorageError):
    code = "corruption"
    hint = "Stored data contradicts the signed checkpoint: stop and investigate the store."


class ConfigError(Error):
    code = "config-error"
    hint = "Run `sealtrail init` or check the data directory and configuration."
