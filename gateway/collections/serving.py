"""Collections over the retrieval library, in worker threads.

Retrieval refusals propagate to the app's handler (``gateway.exceptions.from_library``),
except on the search behind a grounded chat, whose request path counts ``GatewayError``s.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict

from gateway.collections.protocol import (
    CollectionList,
    CollectionView,
    CreateCollectionRequest,
    IngestRequest,
    IngestResponse,
    SearchHit,
    SearchRequest,
    SearchResponse,
)
from gateway.exceptions import NotFound, library_errors
from gateway.metrics import GatewayMetrics
from gateway.protocol import RetrievalOptions
from retrieval.collections import Collections, Document, Hit


class CollectionsServing:
    def __init__(self, collections: Collections, metrics: GatewayMetrics) -> None:
        self._collections = collections
        self._metrics = metrics

    async def create(self, request: CreateCollectionRequest) -> CollectionView:
        info = await asyncio.to_thread(
            self._collections.create, request.name, index_kind=request.index_kind,
            chunk_size=request.chunk_size, chunk_overlap=request.chunk_overlap,
        )  # fmt: skip
        return CollectionView(**asdict(info))

    async def list(self) -> CollectionList:
        infos = await asyncio.to_thread(self._collections.list)
        return CollectionList(data=[CollectionView(**asdict(i)) for i in infos])

    async def ingest(self, name: str, request: IngestRequest) -> IngestResponse:
        documents = [
            Document(id=d.id, text=d.text, source=d.source, metadata=d.metadata)
            for d in request.documents
        ]
        result = await asyncio.to_thread(self._collections.upsert, name, documents)
        self._metrics.ingested_chunks.labels(name).inc(result.chunks)
        await self._update_size(name)
        return IngestResponse(**asdict(result))

    async def delete_document(self, name: str, doc_id: str) -> None:
        removed = await asyncio.to_thread(self._collections.delete_document, name, doc_id)
        if not removed:
            raise NotFound(f"document {doc_id} is not in collection {name}")
        await self._update_size(name)

    async def search(self, name: str, request: SearchRequest) -> SearchResponse:
        hits = await self.hits(name, request.query, top_k=request.top_k, filter=request.filter)
        return SearchResponse(data=[SearchHit(**asdict(h)) for h in hits])

    async def retrieve(self, options: RetrievalOptions, query: str) -> list[Hit]:
        return await self.hits(options.collection, query, top_k=options.top_k,
                               filter=options.filter)  # fmt: skip

    async def hits(self, name: str, query: str, *, top_k: int, filter: dict | None) -> list[Hit]:
        started = time.perf_counter()
        with library_errors():  # also the chat path's search: it must see a GatewayError
            hits = await asyncio.to_thread(
                self._collections.search, name, query, top_k=top_k, filter=filter
            )
        self._metrics.search_latency.labels(name).observe(time.perf_counter() - started)
        return hits

    async def _update_size(self, name: str) -> None:
        info = await asyncio.to_thread(self._collections.info, name)
        self._metrics.collection_chunks.labels(name).set(info.chunks)

    async def refresh_sizes(self) -> None:
        for info in await asyncio.to_thread(self._collections.list):
            self._metrics.collection_chunks.labels(info.name).set(info.chunks)
