"""Wire models of the collections API and of the ``retrieval`` chat extension."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateCollectionRequest(_Strict):
    name: str = Field(description="1-64 lowercase letters, digits, '.', '_' or '-'.")
    index_kind: Literal["flat", "hnsw"] = Field(
        default="flat", description="flat: exact search; hnsw: approximate, for large ones."
    )
    chunk_size: int = Field(default=200, ge=1, le=2000, description="Words per chunk.")
    chunk_overlap: int = Field(default=40, ge=0, description="Words shared by neighbours.")


class CollectionView(BaseModel):
    name: str
    index_kind: str
    dimension: int
    chunk_size: int
    chunk_overlap: int
    documents: int
    chunks: int


class CollectionList(BaseModel):
    object: Literal["list"] = "list"
    data: list[CollectionView]


class DocumentIn(_Strict):
    id: str = Field(min_length=1, max_length=256, description="Upsert key of the document.")
    text: str = Field(min_length=1)
    source: str | None = Field(default=None, max_length=1024)
    metadata: dict[str, Any] = Field(default_factory=dict)


class IngestRequest(_Strict):
    documents: list[DocumentIn] = Field(min_length=1, max_length=1000)


class IngestResponse(BaseModel):
    documents: int
    chunks: int
    replaced_chunks: int


class SearchRequest(_Strict):
    query: str = Field(min_length=1)
    top_k: int = Field(default=4, ge=1, le=50)
    filter: dict[str, Any] | None = Field(
        default=None, description="Equality on 'source', 'doc_id' or a metadata key."
    )


class SearchHit(BaseModel):
    doc_id: str
    chunk_id: str
    score: float
    text: str
    source: str | None
    metadata: dict[str, Any]


class SearchResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[SearchHit]


class Citation(BaseModel):
    """One numbered source that was put in front of the model."""

    index: int
    doc_id: str
    chunk_id: str
    score: float
    source: str | None
