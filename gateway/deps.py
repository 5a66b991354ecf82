"""FastAPI dependencies as ``Annotated`` aliases; live objects come from ``app.state``.

All are ``async def``: FastAPI runs a plain ``def`` dependency in a worker thread, which on the
request path costs more than the whole proxying.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from gateway.openai.serving import OpenAIServing
from gateway.upstream.pool import UpstreamPool


async def get_pool(request: Request) -> UpstreamPool:
    return request.app.state.pool


async def get_serving(request: Request) -> OpenAIServing:
    return request.app.state.serving


PoolDep = Annotated[UpstreamPool, Depends(get_pool)]
ServingDep = Annotated[OpenAIServing, Depends(get_serving)]
