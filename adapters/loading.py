"""Loading and unloading adapter versions on vLLM replicas through its runtime LoRA API.

vLLM must run with ``--enable-lora`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``. Both calls
are idempotent here: loading a name the replica already holds, or unloading one it does not,
counts as success. The caller passes its own ``aiohttp.ClientSession``.
"""

from __future__ import annotations

import time

import aiohttp

_ALREADY_LOADED = "has already been loaded"


class LoraLoadError(RuntimeError):
    """A replica refused or failed to load an adapter; the message quotes the replica."""

    def __init__(self, replica: str, served_name: str, status: int | None, detail: str) -> None:
        super().__init__(f"{replica} could not load {served_name}: {detail}")
        self.replica = replica
        self.status = status


async def _post(
    session: aiohttp.ClientSession, url: str, body: dict[str, str], timeout: float
) -> tuple[int, str]:
    async with session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=timeout)) as r:
        return r.status, await r.text()


async def load_adapter(
    session: aiohttp.ClientSession,
    replica: str,
    served_name: str,
    path: str,
    *,
    timeout: float = 120.0,
) -> float:
    """Load ``path`` as ``served_name`` on ``replica``; returns the seconds it took."""
    started = time.perf_counter()
    try:
        status, text = await _post(
            session,
            f"{replica}/v1/load_lora_adapter",
            {"lora_name": served_name, "lora_path": path},
            timeout,
        )
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise LoraLoadError(replica, served_name, None, f"{type(exc).__name__}: {exc}") from exc
    if status != 200 and not (status == 400 and _ALREADY_LOADED in text):
        raise LoraLoadError(replica, served_name, status, text[:500])
    return time.perf_counter() - started


async def unload_adapter(
    session: aiohttp.ClientSession, replica: str, served_name: str, *, timeout: float = 30.0
) -> None:
    """Unload ``served_name`` from ``replica``; a replica that does not hold it is fine."""
    try:
        status, text = await _post(
            session, f"{replica}/v1/unload_lora_adapter", {"lora_name": served_name}, timeout
        )
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise LoraLoadError(replica, served_name, None, f"{type(exc).__name__}: {exc}") from exc
    if status not in (200, 404):
        raise LoraLoadError(replica, served_name, status, text[:500])
