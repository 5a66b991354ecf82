"""Admin operations over the adapter service.

Library refusals (an invalid folder, an unknown or aliased version) propagate: the app's
handler maps them through ``gateway.exceptions.from_library``.
"""

from __future__ import annotations

import asyncio

from gateway.adapter_service import AdapterService
from gateway.admin.protocol import (
    AdapterList,
    AdapterRecord,
    AliasList,
    AliasRecord,
    AliasRequest,
    EventList,
    RegisterAdapterRequest,
)


class AdminServing:
    def __init__(self, adapters: AdapterService) -> None:
        self._adapters = adapters

    async def register_adapter(self, request: RegisterAdapterRequest) -> AdapterRecord:
        return await self._adapters.register(request.name, request.path)

    async def list_adapters(self) -> AdapterList:
        return AdapterList(data=await asyncio.to_thread(self._adapters.registry.adapters))

    async def delete_adapter(self, served_name: str) -> AdapterRecord:
        return await self._adapters.delete(served_name)

    async def set_alias(self, alias: str, request: AliasRequest) -> AliasRecord:
        return await self._adapters.set_alias(
            alias,
            request.targets,
            response_format=request.response_format,
            retrieval=request.retrieval.model_dump() if request.retrieval else None,
        )

    async def list_aliases(self) -> AliasList:
        return AliasList(data=await asyncio.to_thread(self._adapters.registry.aliases))

    async def rollback_alias(self, alias: str) -> AliasRecord:
        return await self._adapters.rollback(alias)

    async def delete_alias(self, alias: str) -> None:
        await self._adapters.delete_alias(alias)

    async def events(self, *, limit: int, subject: str | None) -> EventList:
        return EventList(
            data=await asyncio.to_thread(
                self._adapters.registry.events, limit=limit, subject=subject
            )
        )
