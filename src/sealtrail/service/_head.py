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

The same protocol answers a request the HTTP parser refuses (a malformed request line,
header field, length or chunk: the parser can read nothing more of the connection) with
400 ``http-malformed`` in the same shape, where uvicorn answers a plain-text 400.
"""

from __future__ import annotations

import json
from typing import Any

from sealtrail.errors import Error, InvalidInput, TooLarge

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
    error: Error
    if status == 400:
        # Fixed words: nothing of a request that is not HTTP is worth echoing.
        error = InvalidInput(
            "the request is not well-formed HTTP/1.1: its request line, a header field, "
            "its length or its chunked body is malformed",
            code="http-malformed",
        )
        reason = b"Bad Request"
    elif status == 414:
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


_REFUSALS = {status: _refusal(status) for status in (400, 414, 431)}


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

    A request the parser refuses is answered 400 ``http-malformed`` (see
    :meth:`send_400_response`).
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
            self._crossed = True
            target = len(self.url)
            fields = sum(len(name) + len(value) for name, value in self.headers)
            if target + fields + _FIELD_OVERHEAD * len(self.headers) > MAX_REQUEST_HEAD:
                self._refuse(414 if target > MAX_REQUEST_HEAD else 431)
                return
            # uvicorn may refuse the head here (a target it cannot parse): it is still one.
            super().on_headers_complete()
            self._in_head = False

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

        def send_400_response(self, msg: str) -> None:
            """What uvicorn calls when the parser refuses what the connection sent (it
            logs ``msg`` first): 400 ``http-malformed`` as problem details, then close.

            Only when the answer can be read as the refused request's: a request before it
            still unanswered (pipelined), or an answer to this one begun (its body is what
            is malformed), and the connection just closes. A request whose body is
            malformed before the app answered it is dropped from the app's view as a
            client gone away would be; the 400 is its answer."""
            if self._refused:
                return
            cycle = self.cycle
            if not self._in_head and cycle is not None:
                if cycle.response_started or self.pipeline:
                    self._refused = True
                    self.transport.close()
                    return
                cycle.disconnected = True
                # Nor may the app's read ask for the body with a 100 Continue: the 400 is
                # on its way, and nothing is written after it.
                cycle.waiting_for_100_continue = False
                cycle.message_event.set()
            self._refuse(400)

        def _refuse(self, status: int) -> None:
            """Answer ``status``, then close: the app answers nothing more on this connection."""
            self._refused = True
            transport = self.transport
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete and not cycle.disconnected:
                # A request before it on this connection (pipelined) is still being
                # answered: no answer can be slipped in; the connection just closes.
                transport.close()
                return
            transport.write(_REFUSALS[status])
            if transport.can_write_eof():
                transport.write_eof()
            self.loop.call_later(REFUSED_LINGER, transport.close)

    return HeadLimitedProtocol
