"""Adapters: the base model, LoRA registry, datasets, training and loading."""

from adapters.base_model import (
    BundledModelMissing,
    find_bundled_gguf,
    is_prepared,
    prepare_base_model,
)

__all__ = ["BundledModelMissing", "find_bundled_gguf", "is_prepared", "prepare_base_model"]
