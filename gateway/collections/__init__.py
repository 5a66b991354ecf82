"""The retrieval API surface: collections, documents, search, and retrieval for chat."""
