"""Every invalid adapter folder is refused with its own reason."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from adapters.validation import AdapterInvalid, validate_adapter_dir

BASES = {"smollm2-135m-instruct"}


@pytest.fixture
def root(tmp_path: Path, trained_adapters: dict[str, Path]) -> Path:
    root = tmp_path / "root"
    shutil.copytree(trained_adapters["v1"], root / "good")
    return root


def reason(root: Path, path: str | Path, max_rank: int = 16) -> str:
    with pytest.raises(AdapterInvalid) as caught:
        validate_adapter_dir(root, path, base_model_names=BASES, max_rank=max_rank)
    assert str(caught.value)
    return caught.value.reason


def edit_config(folder: Path, **changes: object) -> None:
    path = folder / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_a_good_adapter_is_described(root: Path) -> None:
    info = validate_adapter_dir(root, "good", base_model_names=BASES, max_rank=16)
    assert info.rank == 8 and info.path == (root / "good").resolve()
    assert info.target_modules == ["k_proj", "o_proj", "q_proj", "v_proj"]


def test_paths_outside_the_root_are_refused(root: Path, tmp_path: Path) -> None:
    shutil.copytree(root / "good", tmp_path / "outside")
    assert reason(root, "../outside") == "outside_root"
    assert reason(root, tmp_path / "outside") == "outside_root"
    (root / "link").symlink_to(tmp_path / "outside")
    assert reason(root, "link") == "outside_root", "a symlink must not escape"


def test_missing_pieces_are_named(root: Path) -> None:
    assert reason(root, "absent") == "not_found"
    shutil.copytree(root / "good", root / "noweights")
    (root / "noweights" / "adapter_model.safetensors").unlink()
    assert reason(root, "noweights") == "no_weights"
    shutil.copytree(root / "good", root / "noconfig")
    (root / "noconfig" / "adapter_config.json").unlink()
    assert reason(root, "noconfig") == "no_config"


def test_wrong_base_and_rank_too_high(root: Path) -> None:
    shutil.copytree(root / "good", root / "otherbase")
    edit_config(root / "otherbase", base_model_name_or_path="/models/Llama-3-8B")
    assert reason(root, "otherbase") == "wrong_base"
    assert reason(root, "good", max_rank=4) == "rank_too_high"
