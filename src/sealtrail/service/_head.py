"""A bound on every request's head, enforced by the HTTP protocol as it reads it.

uvicorn puts no bound on the request head when it parses with httptools: the request
target (``on_url``) and each header field (inside httptools) are gathered by appending the
piece each read brings to all the pieces before, so a head of N bytes costs about N²/64 KiB
byte copies, on the event loop, before any route, rate limit or access check runs. One
64 MiB header stalled every other client of a server for ~21 s.

:func:`head_limited_protocol` makes a subclass of uvicorn's httptools protocol (the way
``_peer.client_certificate_protocol`` does) that counts a head's bytes as they arrive and
refuses a head over :data:`MAX_REQUEST_HEAD`: with 414 ``uri-too-long`` when the request
target alone is over it, else 431 ``headers-too-large``, as JSON problem details whatever
the request's ``Accept`` (none of its head has been parsed), after which the connection
closes. What it costs a request within the bound: a few attribute updates per
read and one sum over its header fields.
"""

from __future__ import annotations

import json
from typing import Any

from sealtrail.errors import TooLarge

from ._problems import PROBLEM_MEDIA_TYPE, problem_body

__all__ = ["MAX_REQUEST_HEAD", "REFUSED_LINGER", "head_limited_protocol"]

#: Most bytes of a request head: the request line and the header fields. Ours are well under
#: 2 KiB (a bearer token is 65 characters); 64 KiB leaves room for any proxy's additions and
#: is what nginx, for one, accepts at most by default (``large_client_header_buffers``: 4
#: buffers of 8 KiB, one line at most 8 KiB). A head this size is parsed in well under a
#: millisecond; it is the unbounded one that stalls the server.
MAX_REQUEST_HEAD = 64 * 1024
#: Seconds a connection whose head was refused stays open, what it still sends read and
#: dropped, so that its client reads the answer rather than a reset connection.
REFUSED_LINGER = 1.0
#: CRLF and ": " around every header field, counted with its name and value.
_FIELD_OVERHEAD = 4


def _refusal(status: int) -> bytes:
    """The whole HTTP answer refusing a head (the connection then closes)."""
    if status == 414:
        error = TooLarge(
            f"the request target is over the {MAX_REQUEST_HEAD}-byte limit of a request head",
            code="uri-too-long",
        )
        reason = b"URI Too Long"
    else:
        error = TooLarge(
            f"the request line and header fields are over the {MAX_REQUEST_HEAD}-byte limit",
            code="headers-too-large",
        )
        reason = b"Request Header Fields Too Large"
    body = json.dumps(problem_body(error, status)).encode()
    return b"".join(
        [
            b"HTTP/1.1 %d %s\r\n" % (status, reason),
            b"content-type: %s\r\n" % PROBLEM_MEDIA_TYPE.encode(),
            b"content-length: %d\r\n" % len(body),
            b"cache-control: no-store\r\n",
            b"x-content-type-options: nosniff\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
    )


_REFUSALS = {status: _refusal(status) for status in (414, 431)}


def head_limited_protocol(base: type[Any]) -> type[Any]:
    """A subclass of uvicorn's httptools protocol ``base`` refusing a request whose head is
    over :data:`MAX_REQUEST_HEAD` bytes.

    Two counts, because httptools hands over a header field only once it is complete:

    * as the bytes arrive: every read that begins and ends inside one head counts whole, so
      a head growing past the limit is refused at the first read that takes it there, before
      it is gathered any further. The read in which a head begins after the end of the
      previous request on the connection is not counted (how much of it is the new head is
      not known): the count never exceeds the head, and is behind it by one read at most;
    * once the head is parsed: the request target and every header field, exactly.
    """

    class HeadLimitedProtocol(base):  # type: ignore[misc]
        #: Whether the next byte read belongs to a request head (the connection's first
        #: request, or the one after a request's body), until its header fields end.
        _in_head = True
        #: Bytes of the current head counted as they arrived (see above).
        _received = 0
        _refused = False
        #: Whether a head ended, or a message, during the read being parsed.
        _crossed = False

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return  # dropped, until the connection closes
            whole = self._in_head
            self._crossed = False
            super().data_received(data)
            # Only a read that began and ended inside one head counts: one in which a head
            # or a whole message (a body of any size) ended holds bytes of neither head alone.
            if self._refused or self._crossed or not self._in_head or not whole:
                return
            self._received += len(data)
            if self._received > MAX_REQUEST_HEAD:
                self._refuse(414 if len(getattr(self, "url", b"")) > MAX_REQUEST_HEAD else 431)

        def on_headers_complete(self) -> None:
            if self._refused:
                return
            self._in_head = False
            self._crossed = True
            target = len(self.url)
            fields = sum(len(name) + len(value) for name, value in self.headers)
            if target + fields + _FIELD_OVERHEAD * len(self.headers) > MAX_REQUEST_HEAD:
                self._refuse(414 if target > MAX_REQUEST_HEAD else 431)
                return
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            if not self._refused:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if self._refused:
                return
            super().on_message_complete()
            self._in_head = True
            self._crossed = True
            self._received = 0

        def _refuse(self, status: int) -> None:
            """Answer ``status``, then close: nothing of the request reached the app."""
            self._refused = True
            transport = self.transport
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                # A request before it on this connection (pipelined) is still being
                # answered: no answer can be slipped in; the connection just closes.
                transport.close()
                return
            transport.write(_REFUSALS[status])
            if transport.can_write_eof():
                transport.write_eof()
            self.loop.call_later(REFUSED_LINGER, transport.close)

    return HeadLimitedProtocol
