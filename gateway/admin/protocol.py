"""Wire models of the admin API. Unknown fields are refused: a typo must not pass silently."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from adapters.registry import AdapterRecord, AliasRecord, EventRecord
from gateway.protocol import RetrievalOptions


class AdminModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterAdapterRequest(AdminModel):
    name: str = Field(description="Adapter name; versions are numbered under it (extract@v1).")
    path: str = Field(description="Adapter folder, absolute or relative to the adapter root.")


class AliasRequest(AdminModel):
    targets: dict[str, int] = Field(
        description="Served name -> weight, summing to 100 ({'extract@v2': 100}, or a canary "
        "split such as {'extract@v1': 90, 'extract@v2': 10})."
    )
    response_format: dict[str, Any] | None = Field(
        default=None,
        description="OpenAI response_format bound to the alias: requests that send none get "
        "it, validated (json_object or json_schema).",
    )
    retrieval: RetrievalOptions | None = Field(
        default=None,
        description="Retrieval bound to the alias: chat requests that send no 'retrieval' "
        "search this collection and get citations.",
    )


class AdapterList(BaseModel):
    object: str = "list"
    data: list[AdapterRecord]


class AliasList(BaseModel):
    object: str = "list"
    data: list[AliasRecord]


class EventList(BaseModel):
    object: str = "list"
    data: list[EventRecord]


__all__ = [
    "AdapterList",
    "AdapterRecord",
    "AliasList",
    "AliasRecord",
    "AliasRequest",
    "EventList",
    "RegisterAdapterRequest",
]
