"""The gateway's own requests (judge, gate, shadow) yield to clients.

- On the embedded engine they carry a vLLM ``priority`` the engine honours: it runs with
  ``--scheduling-policy priority`` (vLLM refuses any priority but 0 under ``fcfs``).
- A client cannot set its own ``priority`` (it would jump every queue); an internal request
  gets the lane's.
- At most N internal requests are in flight, and none is let in while a client waits in the
  admission queue.
"""

from __future__ import annotations

import asyncio

import httpx

from gateway.admission import AdmissionGate, InternalLane
from gateway.context import RequestContext
from gateway.openai.protocol import ChatCompletionRequest
from gateway.openai.serving import parse_request, set_priority
from gateway.settings import Settings
from tests.conftest import ServeProcess
from tests.helpers import MODEL


def test_the_embedded_engine_schedules_by_priority(serve: ServeProcess) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2,
            "priority": 10}  # fmt: skip
    answer = httpx.post(f"{serve.engine_url}/v1/chat/completions", json=body, timeout=120)
    assert answer.status_code == 200, answer.text


def waiting(engine_url: str) -> float:
    """Requests waiting in the engine's queue, from its own metrics."""
    text = httpx.get(f"{engine_url}/metrics", timeout=10).text
    rows = [line for line in text.splitlines() if line.startswith("vllm:num_requests_waiting")]
    return sum(float(row.rsplit(" ", 1)[1]) for row in rows)


def test_a_client_request_is_scheduled_before_queued_internal_ones(serve: ServeProcess) -> None:
    """Internal work (priority 10, as the gate's generations carry) fills the engine with long
    prefills until vLLM reports a queue; a client's request sent then is scheduled ahead of
    the queued internal ones, so they finish after it (under fcfs it would finish last)."""
    filler = " ".join(["the"] * 1200)  # about 1,200 tokens of prefill each

    async def scenario() -> tuple[list[str], float]:
        done: list[str] = []
        async with httpx.AsyncClient(base_url=serve.engine_url, timeout=300) as client:

            async def ask(name: str, text: str, priority: int | None) -> None:
                body = {"model": MODEL, "prompt": text, "max_tokens": 1}
                if priority is not None:
                    body["priority"] = priority
                answer = await client.post("/v1/completions", json=body)
                assert answer.status_code == 200, answer.text
                done.append(name)

            internal = [  # a distinct first word each: no prefix-cache hits between them
                asyncio.create_task(ask(f"internal-{i}", f"{i} {filler}", 10)) for i in range(10)
            ]
            queued = 0.0
            for _ in range(600):  # until the engine says requests wait (at most a minute)
                queued = await asyncio.to_thread(waiting, serve.engine_url)
                if queued >= 3:
                    break
                await asyncio.sleep(0.1)
            await asyncio.gather(ask("client", "Hi", None), *internal)
        return done, queued

    done, queued = asyncio.run(scenario())
    assert queued >= 3, f"the engine never queued the internal requests ({queued} waiting)"
    after = len(done) - 1 - done.index("client")
    assert after >= 2, f"the client request waited behind the queued internal ones: {done}"


def test_priority_is_the_gateways_to_set() -> None:
    body = b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "priority": -100}'
    lane = InternalLane(max_in_flight=1, priority=10)
    client = parse_request(ChatCompletionRequest, body)
    set_priority(client, RequestContext(request_id="c"), lane)
    assert "priority" not in client.model_dump(exclude_unset=True)
    internal = parse_request(ChatCompletionRequest, body)
    set_priority(internal, RequestContext(request_id="i", internal=True), lane)
    assert internal.model_dump(exclude_unset=True)["priority"] == 10
    unset = parse_request(ChatCompletionRequest, body)  # external fcfs replicas: none is sent
    set_priority(unset, RequestContext(request_id="i", internal=True), InternalLane(
        max_in_flight=1, priority=None))  # fmt: skip
    assert "priority" not in unset.model_dump(exclude_unset=True)


def test_internal_priority_settings() -> None:
    assert Settings(internal_priority="auto").internal_priority_value(embedded=True) == 10
    assert Settings(internal_priority="auto").internal_priority_value(embedded=False) is None
    assert Settings(internal_priority="3").internal_priority_value(embedded=False) == 3
    assert Settings(internal_priority="off").internal_priority_value(embedded=True) is None
    fcfs = Settings(internal_priority="auto", engine_scheduling_policy="fcfs")
    assert fcfs.internal_priority_value(embedded=True) is None


def test_internal_requests_wait_while_a_client_is_queued_and_stay_bounded() -> None:
    async def scenario() -> None:
        gate = AdmissionGate(max_in_flight=1, max_queue=4, queue_timeout=30)
        lane = InternalLane(max_in_flight=2, priority=10, clients_queued=gate.wait_unqueued)
        await gate.acquire()  # a client holds the only slot ...
        queued_client = asyncio.create_task(gate.acquire())  # ... and another one waits
        await asyncio.sleep(0)
        assert gate.waiting == 1
        internal = [asyncio.create_task(lane.acquire()) for _ in range(3)]
        await asyncio.sleep(0.05)
        assert lane.in_flight == 0  # nothing internal starts while a client is queued
        gate.release()  # the queued client is admitted: the queue is empty
        await queued_client
        await asyncio.sleep(0.05)
        assert lane.in_flight == 2 and sum(t.done() for t in internal) == 2  # bounded at 2
        lane.release()
        await asyncio.wait_for(asyncio.gather(*internal), 5)
        assert lane.in_flight == 2

    asyncio.run(scenario())
