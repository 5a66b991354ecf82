"""Retrieval: embeddings and FAISS collections for facts that change."""

__all__: list[str] = []
