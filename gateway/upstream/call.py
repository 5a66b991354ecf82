"""One response being read from one replica, released back to the pool exactly once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import aiohttp

from gateway.exceptions import TransportError, UpstreamError, from_transport
from gateway.metrics import GatewayMetrics

if TYPE_CHECKING:
    from gateway.upstream.pool import Replica

__all__ = ["UpstreamCall"]


class UpstreamCall:
    """One response being read from one replica; ``aclose`` releases the replica once."""

    __slots__ = ("replica", "_response", "_metrics", "_open", "_release")

    def __init__(
        self,
        replica: Replica,
        response: aiohttp.ClientResponse,
        metrics: GatewayMetrics,
        release: Callable[[Replica], None],
    ):
        self.replica = replica
        self._response = response
        self._metrics = metrics
        self._open = True
        self._release = release

    @property
    def status(self) -> int:
        return self._response.status

    async def read(self) -> bytes:
        """The whole body; a transport failure is raised as the matching gateway error."""
        try:
            return await self._response.read()
        except TransportError as exc:
            raise self._failed(exc) from exc

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive; a transport failure is raised as a gateway error."""
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except TransportError as exc:
            raise self._failed(exc) from exc

    def _failed(self, exc: BaseException) -> UpstreamError:
        self._metrics.upstream_errors.labels(self.replica.url, type(exc).__name__).inc()
        return from_transport(exc)

    async def aclose(self) -> None:
        if not self._open:
            return
        self._open = False
        self._release(self.replica)
        if self._response.content.at_eof():
            self._response.release()  # fully read: the connection goes back to the pool
        else:
            self._response.close()  # abandoned mid-body: drop it so the upstream stops work
