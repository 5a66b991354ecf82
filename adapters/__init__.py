"""Adapters: the base model, LoRA training data and trainer, validation, registry, loading.

A library: it never imports ``gateway``; the gateway passes in what it needs (a database
engine, an HTTP session).
"""

from adapters.base_model import (
    BundledModelMissing,
    find_bundled_gguf,
    is_prepared,
    prepare_base_model,
)
from adapters.datasets import DatasetError, dataset_hash, load_conversations
from adapters.loading import LoraLoadError, load_adapter, unload_adapter
from adapters.registry import (
    AdapterRecord,
    AliasRecord,
    EventRecord,
    InUse,
    NotFound,
    Registry,
    RegistryError,
)
from adapters.training import TrainConfig, TrainingReport, read_report, train
from adapters.validation import AdapterInfo, AdapterInvalid, validate_adapter_dir

__all__ = [
    "AdapterInfo",
    "AdapterInvalid",
    "AdapterRecord",
    "AliasRecord",
    "BundledModelMissing",
    "DatasetError",
    "EventRecord",
    "InUse",
    "LoraLoadError",
    "NotFound",
    "Registry",
    "RegistryError",
    "TrainConfig",
    "TrainingReport",
    "dataset_hash",
    "find_bundled_gguf",
    "is_prepared",
    "load_adapter",
    "load_conversations",
    "prepare_base_model",
    "read_report",
    "train",
    "unload_adapter",
    "validate_adapter_dir",
]
