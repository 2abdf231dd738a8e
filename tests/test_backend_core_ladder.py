"""Loading ladders from disk; refusing mismatched tokenizers before any weights are read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from backend.executor import MultiLevelExecutor
from backend.hf_compat import cache_keyword
from backend.ladder import LadderError, load_ladder
from backend.testing import save_tiny_ladder, tiny_tokenizer
from policies.contract import Route

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def ladder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_ladder(tmp_path_factory.mktemp("ladder"), levels=3, seed=2)


def test_load_ladder_from_directory_and_from_paths(ladder_dir: Path) -> None:
    ladder = load_ladder(ladder_dir, dtype="float64")
    assert ladder.info.names == ("tiny0", "tiny1", "tiny2") and ladder.target == 2
    assert ladder.info.devices == (0, 0, 0)  # the engine's lockstep loop: one pass at a time
    assert ladder.dtype == torch.float64 and ladder.vocab_size == 64 and ladder.eos_token_id == 2
    assert ladder.tokenizer("w5 w6")["input_ids"] == [5, 6]
    assert cache_keyword(ladder.models[0]) in {"cache", "past_key_values"}
    same = load_ladder([ladder_dir / "tiny0", ladder_dir / "tiny2"])
    assert same.info.names == ("tiny0", "tiny2") and same.dtype == torch.float32
    executor = MultiLevelExecutor(ladder, eos_token_id=-1)
    executor.add(0, [5, 6, 7])
    outcome = executor.step({0: (Route((0, 2), (3,), 2), 8)})[0]
    assert 1 <= len(outcome.tokens) <= 4 and outcome.feedback.levels[0].emitted == 3


def copy_ladder(source: Path, target: Path) -> Path:
    for path in source.rglob("*"):
        if path.is_file():
            destination = target / path.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(path.read_bytes())
    return target


def test_different_special_tokens_are_refused_before_weights(ladder_dir: Path, tmp_path: Path) -> None:
    broken = copy_ladder(ladder_dir, tmp_path / "broken")
    tokenizer = tiny_tokenizer(64)
    tokenizer.eos_token = "<pad>"
    tokenizer.save_pretrained(broken / "tiny2")
    (broken / "tiny2" / "model.safetensors").write_bytes(b"not weights")  # would fail if it were read
    with pytest.raises(LadderError, match=r"'tiny0'.*'tiny2'.*special token eos_token"):
        load_ladder(broken)


def test_different_vocabularies_are_refused(ladder_dir: Path, tmp_path: Path) -> None:
    broken = copy_ladder(ladder_dir, tmp_path / "broken")
    tiny_tokenizer(60).save_pretrained(broken / "tiny1")
    with pytest.raises(LadderError, match=r"'tiny0'.*'tiny1'.*vocabulary sizes differ \(64 vs 60"):
        load_ladder(broken)


def test_bad_manifests_are_named(tmp_path: Path) -> None:
    with pytest.raises(LadderError, match="no ladder.json"):
        load_ladder(tmp_path)
    (tmp_path / "ladder.json").write_text('{"models": [\n')
    with pytest.raises(LadderError, match="invalid JSON at line 2"):
        load_ladder(tmp_path)
    (tmp_path / "ladder.json").write_text(json.dumps({"models": "tiny0"}))
    with pytest.raises(LadderError, match='key "models" must be a non-empty list'):
        load_ladder(tmp_path)
    (tmp_path / "ladder.json").write_text(json.dumps({"models": ["absent"]}))
    with pytest.raises(LadderError, match="absent: not a Hugging Face model directory"):
        load_ladder(tmp_path)
    with pytest.raises(LadderError, match="unknown dtype 'float8'"):
        load_ladder([], dtype="float8")
