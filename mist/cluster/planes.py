"""The control planes a worker agent talks to: `mist worker --join URL[,URL...]`.

With several scheduler processes sharing the cluster's database, any of them can take a worker's
registration, heartbeats and code downloads (they all write the same membership rows and read
the same code blobs). Requests go to the current URL; one that cannot be reached (refused,
timed out) is left for the next, so a worker keeps its membership when the process it joined
through is killed or paused. Answers, errors included, are returned as they are.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

log = logging.getLogger("mist.cluster")


class ControlPlanes:
    def __init__(self, join: str) -> None:
        self.urls = [u.strip().rstrip("/") for u in join.split(",") if u.strip()]
        if not self.urls:
            raise ValueError("no control plane URL to join")
        self._at = 0

    @property
    def url(self) -> str:
        return self.urls[self._at]

    async def request(self, client: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """`method path` on the current control plane, else on the next ones in turn."""
        for tried in range(len(self.urls)):
            url = self.urls[self._at]
            try:
                return await client.request(method, url + path, **kwargs)
            except httpx.HTTPError as exc:
                if tried == len(self.urls) - 1:
                    raise
                self._at = (self._at + 1) % len(self.urls)
                log.warning("control plane %s cannot be reached (%r); trying %s", url, exc, self.url)
        raise AssertionError("unreachable")
