"""HTTP pushes to monitoring systems (remote-write, Alertmanager): one POST, and the back-off between tries.

Both clients run in their own thread, off the dataflow: a slow or absent endpoint delays only that thread. A refusal
(HTTP 4xx other than 429) is final, as the remote-write and Alertmanager specifications say: the same body would be
refused again. Anything else (no connection, a timeout, 5xx, 429) is retried with exponential back-off until the
client's retry period is over.
"""
from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping

from pipeline.secrets import resolve_secret


class PushRefused(Exception):
    """The endpoint answered that it will never take this body (a 4xx other than 429)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status


class PushFailed(Exception):
    """The endpoint could not take the body now (no connection, a timeout, 5xx, 429): worth retrying."""


def post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> None:
    """POST ``body``; raises :class:`PushRefused` or :class:`PushFailed` unless the endpoint answered 2xx."""
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as error:
        detail = error.read()[:500].decode("utf-8", "replace").strip()
        if 400 <= error.code < 500 and error.code != 429:
            raise PushRefused(error.code, detail) from None
        raise PushFailed(f"HTTP {error.code}: {detail}") from None
    except (OSError, http.client.HTTPException) as error:  # refused, unreachable, timed out, cut off
        raise PushFailed(str(getattr(error, "reason", error))) from None


def backoff(initial: float = 0.5, maximum: float = 30.0) -> Iterator[float]:
    """Seconds to wait before each retry: doubling from ``initial`` up to ``maximum``.

    >>> import itertools
    >>> list(itertools.islice(backoff(0.5, 3.0), 5))
    [0.5, 1.0, 2.0, 3.0, 3.0]
    """
    delay = initial
    while True:
        yield delay
        delay = min(2 * delay, maximum)


def bearer_headers(env_name: str, file_path: str) -> dict[str, str]:
    """An ``Authorization`` header from the token an env var or a file holds (none when neither is set)."""
    token = resolve_secret(env_name, file_path)
    return {"Authorization": f"Bearer {token}"} if token else {}
