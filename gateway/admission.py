"""Admission control: what one request may ask for, and how many are let in at once.

Two parts, both in front of the engine so a client can never pile work up inside it:

- ``RequestLimits`` caps a single generation request (choices, tokens, messages, stop
  sequences) and gives chat requests a ``max_tokens`` when they name none. vLLM would accept
  ``"n": 1000`` and starve everyone else for hours; a gateway is where that is refused.
- ``AdmissionGate`` bounds requests in flight across the gateway. Past the limit a request
  waits in a bounded FIFO queue for at most ``queue_timeout`` seconds; a full queue or a
  spent wait is a ``429`` with ``Retry-After``, never an unbounded pile-up. (The per-replica
  limit lives in the upstream pool, which knows the replicas.)
- ``InternalLane`` admits the gateway's own requests (judge, gate, shadow) so that they never
  crowd out clients: at most ``max_in_flight`` at once, none while a client waits in the
  admission queue, each sent with a lower vLLM ``priority`` (a larger number: vLLM schedules
  lower values first when it runs with ``--scheduling-policy priority``, as the embedded
  engine does).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.exceptions import InvalidRequest, RateLimited
from gateway.openai.protocol import ChatCompletionRequest, GenerationRequest

RETRY_AFTER_SECONDS = 1


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """Per-request caps (every field a setting; see ``Settings``)."""

    max_n: int = 8  # also caps best_of
    default_max_tokens: int = 512  # chat only: vLLM's completions default (16) is kept
    max_tokens: int = 4096
    max_messages: int = 512
    max_stop: int = 16

    def check(self, request: GenerationRequest) -> None:
        """Refuse what exceeds a cap with a 400 naming the parameter; fill the chat default."""
        for name in ("n", "best_of"):
            value = getattr(request, name, None)
            if isinstance(value, int) and value > self.max_n:
                raise InvalidRequest(
                    f"{name}={value} is above this gateway's limit of {self.max_n}.", param=name
                )
        for name in ("max_tokens", "max_completion_tokens"):
            value = getattr(request, name, None)
            if isinstance(value, int) and value > self.max_tokens:
                raise InvalidRequest(
                    f"{name}={value} is above this gateway's limit of {self.max_tokens} tokens.",
                    param=name,
                )
        stop = getattr(request, "stop", None)
        if isinstance(stop, list) and len(stop) > self.max_stop:
            raise InvalidRequest(
                f"{len(stop)} stop sequences; at most {self.max_stop} are accepted.", param="stop"
            )
        if isinstance(request, ChatCompletionRequest):
            if len(request.messages) > self.max_messages:
                raise InvalidRequest(
                    f"{len(request.messages)} messages; at most {self.max_messages} are accepted.",
                    param="messages",
                )
            if request.max_tokens is None and request.max_completion_tokens is None:
                request.max_tokens = self.default_max_tokens


class AdmissionGate:
    """At most ``max_in_flight`` requests admitted; up to ``max_queue`` wait, FIFO."""

    def __init__(
        self,
        *,
        max_in_flight: int,
        max_queue: int,
        queue_timeout: float,
        on_reject: Callable[[str], None] | None = None,
    ) -> None:
        self.max_in_flight = max_in_flight
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self._on_reject = on_reject or (lambda reason: None)
        self.in_flight = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._unqueued: asyncio.Event | None = None  # made in the running loop, on first use

    async def wait_unqueued(self) -> None:
        """Until no client waits in the queue (internal work yields to clients)."""
        while self._waiters:
            if self._unqueued is None:
                self._unqueued = asyncio.Event()
            self._unqueued.clear()
            await self._unqueued.wait()

    def _note_queue(self) -> None:
        if not self._waiters and self._unqueued is not None:
            self._unqueued.set()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self) -> float:
        """Admit the caller (a slot is held until ``release``); the seconds it waited.

        Raises ``RateLimited`` (429) when the queue is full or the wait runs out.
        """
        if self.in_flight < self.max_in_flight and not self._waiters:
            self.in_flight += 1
            return 0.0
        if len(self._waiters) >= self.max_queue:
            self._on_reject("queue_full")
            raise RateLimited(
                f"The gateway is at capacity ({self.max_in_flight} requests in flight, "
                f"{self.max_queue} waiting); retry after {RETRY_AFTER_SECONDS}s.",
                limit="requests",
                retry_after=RETRY_AFTER_SECONDS,
            )
        began = time.perf_counter()
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, self.queue_timeout)
        except TimeoutError:
            self._on_reject("queue_timeout")
            raise RateLimited(
                f"Waited {self.queue_timeout:.0f}s for one of {self.max_in_flight} request "
                f"slots; retry after {RETRY_AFTER_SECONDS}s.",
                limit="requests",
                retry_after=RETRY_AFTER_SECONDS,
            ) from None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot just as the client left: pass it on
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            self._note_queue()
        return time.perf_counter() - began

    def release(self) -> None:
        """Free a slot: hand it straight to the oldest waiter, if any."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes on: in_flight stays the same
                self._note_queue()
                return
        self.in_flight -= 1
        self._note_queue()


class InternalLane:
    """Admission for internal requests: a bounded lane that waits for the clients' queue."""

    def __init__(
        self,
        *,
        max_in_flight: int,
        priority: int | None,
        clients_queued: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``priority``: vLLM's request priority for internal requests (None: sent without
        one, for replicas scheduling first come first served); ``clients_queued``: returns
        once no client waits for admission."""
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.priority = priority
        self.max_in_flight = max_in_flight
        self._slots = asyncio.Semaphore(max_in_flight)
        self._clients_queued = clients_queued
        self.in_flight = 0

    async def acquire(self) -> None:
        await self._slots.acquire()
        try:
            if self._clients_queued is not None:
                await self._clients_queued()
        except BaseException:
            self._slots.release()
            raise
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1
        self._slots.release()
