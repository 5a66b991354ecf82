"""Admin operations over the adapter service, with library errors turned into API errors."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from adapters.registry import RegistryError
from adapters.validation import AdapterInvalid
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
from gateway.exceptions import InvalidRequest, from_registry


@contextmanager
def api_errors() -> Iterator[None]:
    """One table from adapter/registry refusals to HTTP statuses."""
    try:
        yield
    except AdapterInvalid as exc:
        raise InvalidRequest(str(exc), param="path", code=exc.reason) from exc
    except RegistryError as exc:
        raise from_registry(exc) from exc


class AdminServing:
    def __init__(self, adapters: AdapterService) -> None:
        self._adapters = adapters

    async def register_adapter(self, request: RegisterAdapterRequest) -> AdapterRecord:
        with api_errors():
            return await self._adapters.register(request.name, request.path)

    async def list_adapters(self) -> AdapterList:
        return AdapterList(data=await asyncio.to_thread(self._adapters.registry.adapters))

    async def delete_adapter(self, served_name: str) -> AdapterRecord:
        with api_errors():
            return await self._adapters.delete(served_name)

    async def set_alias(self, alias: str, request: AliasRequest) -> AliasRecord:
        with api_errors():
            return await self._adapters.set_alias(
                alias,
                request.targets,
                response_format=request.response_format,
                retrieval=request.retrieval.model_dump() if request.retrieval else None,
            )

    async def list_aliases(self) -> AliasList:
        return AliasList(data=await asyncio.to_thread(self._adapters.registry.aliases))

    async def rollback_alias(self, alias: str) -> AliasRecord:
        with api_errors():
            return await self._adapters.rollback(alias)

    async def delete_alias(self, alias: str) -> None:
        with api_errors():
            await self._adapters.delete_alias(alias)

    async def events(self, *, limit: int, subject: str | None) -> EventList:
        return EventList(
            data=await asyncio.to_thread(
                self._adapters.registry.events, limit=limit, subject=subject
            )
        )
