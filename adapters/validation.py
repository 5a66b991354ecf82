"""Checks an adapter folder must pass before anything is registered or loaded.

Each failure is an ``AdapterInvalid`` whose ``reason`` is a stable code and whose message names
the problem in words a user can act on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


class AdapterInvalid(ValueError):
    """The folder cannot be served; ``reason`` says which check failed."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class AdapterInfo:
    """What validation learned about a folder."""

    path: Path
    rank: int
    alpha: int | None
    target_modules: list[str]
    base_model: str


def resolve_inside(root: Path, path: str | Path) -> Path:
    """``path`` (absolute, or relative to ``root``) resolved, refused if it leaves ``root``.

    Symlinks are resolved before the check, so a link pointing outside the root is refused too.
    """
    root = root.resolve()
    if "\x00" in str(path):  # the OS refuses it with a ValueError, not an OSError
        raise AdapterInvalid("bad_path", f"adapter path {str(path)!r} contains a NUL byte")
    candidate = Path(path)
    if not candidate.is_absolute():
        candidate = root / candidate
    resolved = candidate.resolve()
    if resolved != root and root not in resolved.parents:
        raise AdapterInvalid(
            "outside_root", f"adapter path {path} is outside the adapter root {root}"
        )
    return resolved


def validate_adapter_dir(
    root: Path, path: str | Path, *, base_model_names: set[str], max_rank: int
) -> AdapterInfo:
    """Run every check on the folder at ``path`` and describe it, or raise ``AdapterInvalid``."""
    folder = resolve_inside(root, path)
    try:
        found = folder.is_dir()
    except OSError as exc:  # a name too long for the filesystem, for one
        raise AdapterInvalid("not_found", f"adapter folder {path} cannot be read: {exc}") from exc
    if not found:
        raise AdapterInvalid("not_found", f"adapter folder {path} does not exist")
    config_path = folder / "adapter_config.json"
    if not config_path.is_file():
        raise AdapterInvalid("no_config", f"{path} has no adapter_config.json")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise AdapterInvalid(
            "no_weights", f"{path} has no adapter weights ({' or '.join(WEIGHT_FILES)})"
        )
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise AdapterInvalid(
            "bad_config", f"{path}/adapter_config.json is not JSON: {exc}"
        ) from exc
    if not isinstance(config, dict) or config.get("peft_type", "LORA") != "LORA":
        raise AdapterInvalid("not_lora", f"{path} is not a LoRA adapter")
    rank = config.get("r")
    if not isinstance(rank, int) or rank < 1:
        raise AdapterInvalid("bad_config", f"{path}/adapter_config.json has no valid rank 'r'")
    if rank > max_rank:
        raise AdapterInvalid(
            "rank_too_high",
            f"adapter rank {rank} exceeds the engine's maximum LoRA rank {max_rank}",
        )
    base = str(config.get("base_model_name_or_path") or "")
    wanted = {name.lower() for name in base_model_names}
    if Path(base).name.lower() not in wanted and base.lower() not in wanted:
        raise AdapterInvalid(
            "wrong_base",
            f"adapter was trained on base model {base!r}, but the served base model is "
            f"{' / '.join(sorted(base_model_names))}",
        )
    targets = config.get("target_modules") or []
    if isinstance(targets, str):
        targets = [targets]
    return AdapterInfo(
        path=folder,
        rank=rank,
        alpha=config.get("lora_alpha"),
        target_modules=sorted(targets),
        base_model=base,
    )
