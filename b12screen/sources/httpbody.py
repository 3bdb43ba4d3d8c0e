"""Read an HTTP response body (``requests`` with ``stream=True``) a chunk at a time, with a size cap and an
overall time limit: the socket's timeout shrinks to the time left before each read, so a server dripping
its body cannot hold a request open past its limit."""

from __future__ import annotations

from collections.abc import Callable

import requests
import urllib3

#: Largest response body read (bytes); a larger one is an error and is never read whole.
MAX_BODY_BYTES = 32 << 20
_CHUNK = 1 << 16


class BodyTooLarge(Exception):
    """The body (declared or read) is over the cap."""


class BodyTimeout(Exception):
    """The request ran past its overall time limit."""


def read_capped(response: requests.Response, limit: int, time_left: Callable[[], float]) -> bytes:
    """The body of ``response`` (also stored as its ``content``); closes the response on any failure.

    Raises :class:`BodyTooLarge`, :class:`BodyTimeout`, or ``requests.ConnectionError`` when the
    connection breaks."""
    chunks: list[bytes] = []
    size = 0
    try:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(f"response larger than {limit} bytes")
        raw = response.raw
        while True:
            left = time_left()
            if left <= 0:
                raise BodyTimeout()
            sock = getattr(getattr(raw, "connection", None), "sock", None)
            if sock is not None:
                sock.settimeout(left)
            chunk = raw.read1(_CHUNK, decode_content=True)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"response larger than {limit} bytes")
            chunks.append(chunk)
    except (OSError, urllib3.exceptions.HTTPError) as exc:
        response.close()
        if isinstance(exc, (TimeoutError, urllib3.exceptions.TimeoutError)):
            raise BodyTimeout() from None
        raise requests.ConnectionError("the connection broke while reading the body") from None
    except BaseException:
        response.close()
        raise
    body = b"".join(chunks)
    response._content = body  # what requests itself does when it reads a body whole
    return body
