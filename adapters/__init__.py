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
from adapters.curation import Candidate, CurationConfig, LeakGuard, Removal, curate
from adapters.dataset_registry import DatasetRegistry, DatasetRegistryError, DatasetVersion
from adapters.datasets import DatasetError, dataset_hash, load_conversations
from adapters.gate import GateConfig, GateError, GateVerdict, Scored, decide, run_gate
from adapters.jobs import JobConflict, JobRecord, JobStore
from adapters.loading import LoraLoadError, load_adapter, unload_adapter
from adapters.registry import (
    REGISTRY_CHANNEL,
    AdapterRecord,
    AliasRecord,
    EventRecord,
    InUse,
    NotFound,
    Registry,
    RegistryError,
)
from adapters.trainer_process import TrainerProcess, TrainRequest
from adapters.training import TrainConfig, TrainingReport, read_report, train
from adapters.validation import AdapterInfo, AdapterInvalid, validate_adapter_dir

__all__ = [
    "REGISTRY_CHANNEL",
    "AdapterInfo",
    "AdapterInvalid",
    "AdapterRecord",
    "AliasRecord",
    "BundledModelMissing",
    "Candidate",
    "CurationConfig",
    "DatasetError",
    "DatasetRegistry",
    "DatasetRegistryError",
    "DatasetVersion",
    "EventRecord",
    "GateConfig",
    "GateError",
    "GateVerdict",
    "InUse",
    "JobConflict",
    "JobRecord",
    "JobStore",
    "LeakGuard",
    "LoraLoadError",
    "NotFound",
    "Registry",
    "RegistryError",
    "Removal",
    "Scored",
    "TrainConfig",
    "TrainRequest",
    "TrainerProcess",
    "TrainingReport",
    "curate",
    "dataset_hash",
    "decide",
    "find_bundled_gguf",
    "is_prepared",
    "load_adapter",
    "load_conversations",
    "prepare_base_model",
    "read_report",
    "run_gate",
    "train",
    "unload_adapter",
    "validate_adapter_dir",
]
