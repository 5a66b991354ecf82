"""FastAPI dependencies as ``Annotated`` aliases; live objects come from ``app.state``."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from gateway.context import RequestContext
from gateway.exceptions import Unauthorized
from gateway.openai.serving import OpenAIServing
from gateway.settings import Settings
from gateway.upstream.pool import UpstreamPool


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_pool(request: Request) -> UpstreamPool:
    return request.app.state.pool


def get_serving(request: Request) -> OpenAIServing:
    return request.app.state.serving


def get_context(request: Request) -> RequestContext:
    return request.state.ctx


SettingsDep = Annotated[Settings, Depends(get_settings)]
PoolDep = Annotated[UpstreamPool, Depends(get_pool)]
ServingDep = Annotated[OpenAIServing, Depends(get_serving)]
ContextDep = Annotated[RequestContext, Depends(get_context)]


async def require_api_key(request: Request) -> None:
    """When inference keys are configured, ``Authorization: Bearer <key>`` must hold one.

    Every configured key is compared, in constant time, so timing tells nothing about which
    key or how much of it matched.
    """
    keys: tuple[bytes, ...] = request.app.state.api_keys
    if not keys:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("Missing API key: send 'Authorization: Bearer <key>'.")
    presented = token.strip().encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(presented, key)
    if not matched:
        raise Unauthorized("Incorrect API key provided.")
