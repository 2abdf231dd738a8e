"""The shipped default ladder: loads offline, one tokenizer, fp16 storage, honest training record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from backend.prompts import PromptCorpus
from backend.zoo import default_ladder_dir

LADDER = default_ladder_dir()


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    return json.loads((LADDER / "ladder.json").read_text())


def model_dirs(manifest: dict[str, Any]) -> list[Path]:
    return [LADDER / name for name in manifest["models"]]


def test_manifest_lists_at_least_three_models_with_fp16_weights(manifest: dict[str, Any]) -> None:
    assert manifest["format"] == 1
    assert len(manifest["models"]) >= 3
    total_bytes = 0
    for directory in model_dirs(manifest):
        weights = directory / "model.safetensors"
        total_bytes += weights.stat().st_size
        with safe_open(str(weights), framework="pt") as handle:
            dtypes = {handle.get_slice(key).get_dtype() for key in handle.keys()}  # noqa: SIM118
        assert dtypes == {"F16"}, f"{weights}: {dtypes}"
    assert total_bytes < 60e6  # tens of MB at most, it is package data


def test_every_model_loads_offline_and_the_tokenizer_is_shared(
    manifest: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tokenizers = [AutoTokenizer.from_pretrained(d, local_files_only=True) for d in model_dirs(manifest)]
    vocabularies = [t.get_vocab() for t in tokenizers]
    assert all(vocab == vocabularies[-1] for vocab in vocabularies)
    assert all(t.eos_token_id == manifest["tokenizer"]["eos_token_id"] for t in tokenizers)
    params = []
    for directory in model_dirs(manifest):
        model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True, dtype=torch.float32)
        assert model.config.vocab_size == len(tokenizers[0])
        params.append(sum(p.numel() for p in model.parameters()))
    assert params == sorted(params)  # cheapest first, target last
    assert params[-1] / params[0] >= 30
    text = "def main():\n    return 0\n"
    assert tokenizers[0].decode(tokenizers[0].encode(text, add_special_tokens=False)) == text


def test_training_record_is_complete(manifest: dict[str, Any]) -> None:
    training = manifest["training"]
    for key in ("recipe", "recipe_digest", "corpus_digest", "stages", "evaluation", "versions"):
        assert key in training, key
    assert training["recipe"]["seed"] is not None
    for stage in training["stages"].values():
        assert stage["steps"] > 0 and stage["tokens"] > 0 and stage["wall_seconds"] > 0
        for losses in stage["losses"].values():
            assert losses["last_10_mean"] < losses["first"]  # training lowered the loss
    for name in manifest["models"]:
        record = training["evaluation"][name]
        assert record["fp16_argmax_agreement"]["agreement"] >= 0.999, name
        assert record["fp16_argmax_agreement"]["positions"] >= 1000


def test_fp16_arithmetic_reproduces_fp32_argmax_on_held_out_text(manifest: dict[str, Any]) -> None:
    target = model_dirs(manifest)[-1]
    tokenizer = AutoTokenizer.from_pretrained(target, local_files_only=True)
    corpus = PromptCorpus.default()
    batch = torch.tensor([corpus.materialise(tokenizer, 96, domain, 0) for domain in corpus.domains])
    outputs = []
    for dtype in (torch.float32, torch.float16):
        model = AutoModelForCausalLM.from_pretrained(target, local_files_only=True, dtype=dtype).eval()
        with torch.no_grad():
            outputs.append(model(input_ids=batch).logits.float())
    full, half = outputs
    agreement = (full.argmax(-1) == half.argmax(-1)).float().mean().item()
    assert agreement >= 0.99, agreement
    # and the model is a trained one: it predicts held-out text far better than chance
    loss = torch.nn.functional.cross_entropy(full[:, :-1].flatten(0, 1), batch[:, 1:].flatten())
    assert loss.item() < 0.6 * torch.log(torch.tensor(float(len(tokenizer)))).item()
