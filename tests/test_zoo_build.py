"""The zoo build: resumable, budget-stable training stages; `zoo build --small` gives a loadable ladder;
the copy stage trains the target only, on windows of training text."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from backend.zoo import build as zoo_build
from backend.zoo import corpus
from backend.zoo import recipe as zoo_recipe
from backend.zoo.recipe import CopyStage, ModelSpec, StageBudget
from backend.zoo.train import copy_window, decay_start, learning_rate, run_stage, sample_copy_batch
from specrouter.cli import main

STREAMS = [np.random.default_rng(0).integers(0, 48, 4000).astype(np.uint16) for _ in range(2)]


def tiny_model(seed: int, hidden: int = 16) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=48, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    return LlamaForCausalLM(config)


def train(
    checkpoint: Path, steps: int, stop_after: int | None = None, teacher: LlamaForCausalLM | None = None
) -> dict[str, torch.Tensor] | None:
    model = tiny_model(1)
    budget = StageBudget(steps=steps, batch=2, learning_rate=1e-2, warmup_steps=2)
    stage = "target" if teacher is None else "distill"
    result = run_stage(stage, {"m": model}, teacher, budget, STREAMS, 16, 0, 0.1, checkpoint, 2, stop_after)
    return None if result is None else model.state_dict()


def assert_same_weights(left: dict[str, torch.Tensor], right: dict[str, torch.Tensor]) -> None:
    assert left.keys() == right.keys()
    for key in left:
        assert torch.equal(left[key], right[key]), key


@pytest.mark.parametrize("distil", [False, True])
def test_interrupted_stage_resumes_to_the_same_weights(tmp_path: Path, distil: bool) -> None:
    teacher = tiny_model(7, hidden=24).eval() if distil else None
    straight = train(tmp_path / "straight.pt", 6, teacher=teacher)
    assert train(tmp_path / "resumed.pt", 6, stop_after=3, teacher=teacher) is None  # "interrupted"
    assert torch.load(tmp_path / "resumed.pt", weights_only=False)["step"] == 3
    resumed = train(tmp_path / "resumed.pt", 6, teacher=teacher)
    assert straight is not None and resumed is not None
    assert_same_weights(straight, resumed)
    assert not torch.equal(straight["lm_head.weight"], tiny_model(1).state_dict()["lm_head.weight"])


def test_checkpoint_continues_under_a_shorter_budget_before_the_decay(tmp_path: Path) -> None:
    # 2 steps of a 12-step budget are also the first 2 steps of an 8-step budget (both still stable)
    assert train(tmp_path / "long.pt", 12, stop_after=2) is None
    shortened = train(tmp_path / "long.pt", 8)
    straight = train(tmp_path / "short.pt", 8)
    assert shortened is not None and straight is not None
    assert_same_weights(shortened, straight)
    # past the decay start of the shorter budget, reuse would change the result: refused
    assert train(tmp_path / "late.pt", 12, stop_after=8) is None
    with pytest.raises(ValueError, match=r"late.pt: written at step 8 of a 12-step budget"):
        train(tmp_path / "late.pt", 8)


def test_learning_rate_is_budget_free_until_the_decay() -> None:
    short, long = StageBudget(100, 8, 1e-3, 10), StageBudget(400, 8, 1e-3, 10)
    for step in range(decay_start(short)):
        assert learning_rate(step, short) == learning_rate(step, long)
    assert learning_rate(99, short) < 0.2 * learning_rate(50, short)
    assert learning_rate(0, short) == pytest.approx(1e-4)


TINY = replace(
    zoo_recipe.SMALL,
    vocab_size=300,
    context=32,
    members=(
        ModelSpec("a", hidden=8, layers=1, heads=2, intermediate=16),
        ModelSpec("b", hidden=16, layers=1, heads=2, intermediate=32),
        ModelSpec("c", hidden=32, layers=2, heads=2, intermediate=64),
    ),
    copy_stage=CopyStage(StageBudget(steps=2, batch=4, learning_rate=1e-3, warmup_steps=1), 2, 4, 12),
    train_chars_per_domain=60_000,
    checkpoint_every=2,
    eval_windows_per_domain=2,
)


def contains(stream: np.ndarray, part: np.ndarray) -> bool:
    """Whether ``part`` is a contiguous slice of ``stream``."""
    if len(part) == 0:
        return True
    windows = np.lib.stride_tricks.sliding_window_view(stream, len(part))
    return bool((windows == part).all(axis=1).any())


def test_copy_windows_repeat_a_span_of_their_stream_after_a_marker() -> None:
    # disjoint token ranges: stream 0 uses 0..99, stream 1 uses 100..199, markers 200..
    streams = [
        np.random.default_rng(s).integers(100 * s, 100 * s + 100, 5000).astype(np.uint16) for s in (0, 1)
    ]
    markers = [[np.array([200, 201], np.uint16), np.array([], np.uint16)], [np.array([202], np.uint16)]]
    spec = CopyStage(StageBudget(steps=4, batch=6, learning_rate=1e-3, warmup_steps=1), 4, 5, 20, 0.5)
    edited = 0
    for step in range(4):
        batch = sample_copy_batch(streams, markers, spec, 64, 0, step).numpy()
        assert batch.shape == (6, 65)
        assert np.array_equal(batch, sample_copy_batch(streams, markers, spec, 64, 0, step).numpy())  # seeded
        for row, window in enumerate(batch):
            stream, allowed = streams[row % 2], markers[row % 2]
            marker_tokens = set(np.concatenate(allowed).tolist())
            assert set(window.tolist()) <= set(stream.tolist()) | marker_tokens
            if row >= spec.copy_rows:
                assert contains(stream, window.astype(np.uint16))  # an ordinary window
                continue
            # span, marker, revision, marker, revision, ...: find the period from the marker
            for length in range(spec.min_span, spec.max_span + 1):
                span = window[:length].astype(np.uint16)
                for marker in allowed:
                    period = length + len(marker)
                    revision = window[period : period + length]
                    if not contains(stream, span) or len(revision) < length:
                        continue
                    if not np.array_equal(window[length:period], marker):
                        continue
                    repeated = np.tile(np.concatenate([marker, revision]), 64)[: len(window) - length]
                    changed = set(span[span != revision].tolist())
                    if np.array_equal(window[length:], repeated) and len(changed) <= 1:
                        edited += bool(changed)
                        break
                else:
                    continue
                break
            else:
                raise AssertionError(f"step {step} row {row}: not a repeated span of its stream: {window}")
    assert edited > 0  # some revisions carry the edit


def test_copy_window_edit_replaces_one_token_everywhere() -> None:
    stream = np.arange(1000, dtype=np.uint16) % 7
    spec = CopyStage(StageBudget(steps=1, batch=1, learning_rate=1e-3, warmup_steps=1), 1, 14, 14, 1.0)
    window = copy_window(stream, [np.array([9], np.uint16)], 100, spec, np.random.default_rng(3))
    span, revision = window[:14], window[15:29]
    assert window[14] == 9 and np.array_equal(window[30:44], revision)
    old = set(span[span != revision].tolist())
    assert len(old) == 1  # this seed edits: every occurrence of one token, and only those, changed
    (token,) = old
    assert np.array_equal(span != revision, span == token)
    assert len(set(revision[span == token].tolist())) == 1 and set(revision.tolist()) <= set(stream.tolist())


def test_earlier_stages_do_not_depend_on_the_copy_stage() -> None:
    trial = replace(zoo_recipe.FULL, copy_stage=zoo_recipe.EXPERIMENTAL_COPY_STAGE)
    other = replace(
        zoo_recipe.FULL,
        copy_stage=CopyStage(StageBudget(steps=7, batch=2, learning_rate=1.0, warmup_steps=1), 1, 3, 5, 0.0),
    )
    for stage in ("target", "distill"):  # their checkpoints (and the students) are reused as they are
        assert other.stage_key(stage) == trial.stage_key(stage) == zoo_recipe.FULL.stage_key(stage)
    assert other.stage_key("copy") != trial.stage_key("copy")
    assert len({other.digest(), trial.digest(), zoo_recipe.FULL.digest()}) == 3
    longer = trial.with_steps(None, None, 400)
    assert longer.copy_stage.budget.steps == 400 and longer.stage_key("copy") == trial.stage_key("copy")
    assert zoo_recipe.SMALL.copy_stage.budget.steps < trial.copy_stage.budget.steps


def test_the_default_recipe_has_no_copy_stage_and_is_the_shipped_ladders() -> None:
    """The copy stage is measured, not shipped: the default recipe is the one the shipped ladder
    records, so `specrouter zoo build` finds it built instead of retraining for an hour."""
    from backend.zoo import default_ladder_dir

    assert zoo_recipe.FULL.copy_stage == zoo_recipe.NO_COPY_STAGE
    assert "copy_stage" not in zoo_recipe.FULL.to_dict()
    manifest = json.loads((default_ladder_dir() / "ladder.json").read_text())
    assert zoo_recipe.FULL.digest() == manifest["training"]["recipe_digest"]


def test_zoo_build_small_is_resumable_cached_and_loadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(zoo_recipe.RECIPES, "small", TINY)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    copy_batches: list[tuple[list[np.ndarray], torch.Tensor]] = []

    def recording_sampler(streams: list[np.ndarray], *args: object, **kwargs: object) -> torch.Tensor:
        batch = sample_copy_batch(streams, *args, **kwargs)  # type: ignore[arg-type]
        copy_batches.append((streams, batch))
        return batch

    monkeypatch.setattr(zoo_build, "sample_copy_batch", recording_sampler)
    command = [
        "zoo",
        "build",
        "--small",
        "--out",
        str(tmp_path),
        "--target-steps",
        "3",
        "--distill-steps",
        "2",
    ]
    assert main([*command, "--stop-after", "4"]) == 0  # interrupted during distillation
    assert "rerun the same command to resume" in capsys.readouterr().out
    assert not (tmp_path / "ladder.json").exists()
    (checkpoint,) = (tmp_path / ".work").glob("distill-*.pt")
    assert torch.load(checkpoint, weights_only=False)["step"] == 1

    assert main([*command, "--stop-after", "6"]) == 0  # interrupted during the copy stage
    assert not (tmp_path / "ladder.json").exists()
    (checkpoint,) = (tmp_path / ".work").glob("copy-*.pt")
    assert torch.load(checkpoint, weights_only=False)["step"] == 1
    assert list(torch.load(checkpoint, weights_only=False)["models"]) == ["c"]  # the target only

    assert main(command) == 0
    manifest = json.loads((tmp_path / "ladder.json").read_text())
    assert manifest["format"] == 1 and manifest["models"] == ["a", "b", "c"]
    stages = manifest["training"]["stages"]
    assert stages["target"]["steps"] == 3 and stages["distill"]["steps"] == 2
    assert len(stages["distill"]["losses"]["a"]["every_1_steps"]) == 2  # resumed, not restarted
    assert list(stages) == ["target", "distill", "copy"] and list(stages["copy"]["losses"]) == ["c"]
    assert len(stages["copy"]["losses"]["c"]["every_1_steps"]) == 2  # resumed, not restarted
    assert set(manifest["training"]["evaluation"]["c"]["copy_loss"]) == {"first_copy", "second_copy", "span"}

    # the copy stage saw the training streams only, and its copy rows are spans of them
    training = [np.load(tmp_path / ".work" / f"train-{domain}.npy") for domain in corpus.DOMAINS]
    held_out = [np.load(tmp_path / ".work" / f"held-{domain}.npy") for domain in corpus.DOMAINS]
    assert len(copy_batches) == 2
    for streams, batch in copy_batches:
        assert len(streams) == len(training)
        assert all(np.array_equal(s, t) for s, t in zip(streams, training, strict=True))
        assert not any(np.array_equal(s, h) for s in streams for h in held_out)
        for row in range(TINY.copy_stage.copy_rows):
            span = batch[row, : TINY.copy_stage.min_span].numpy().astype(np.uint16)
            assert contains(training[row % len(training)], span)
    for name in manifest["models"]:
        model = AutoModelForCausalLM.from_pretrained(tmp_path / name, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(tmp_path / name, local_files_only=True)
        assert model.config.vocab_size == len(tokenizer) == manifest["tokenizer"]["vocab_size"]
        assert (tmp_path / name / "tokenizer.json").read_bytes() == (
            tmp_path / "a" / "tokenizer.json"
        ).read_bytes()
    assert (tmp_path / "prompts.jsonl").stat().st_size > 0

    assert main(command) == 0  # a finished build is not redone
    assert "already built" in capsys.readouterr().out


def test_early_exit_draft_is_the_targets_first_layers_with_its_head() -> None:
    from backend.zoo.smollm2 import early_exit

    config = LlamaConfig(**{**tiny_model(3, hidden=16).config.to_dict(), "num_hidden_layers": 3})
    torch.manual_seed(3)
    target = LlamaForCausalLM(config).eval()
    draft = early_exit(target, 2)
    inputs = torch.tensor([[1, 5, 9, 4, 2]])
    with torch.no_grad():
        hidden = target(input_ids=inputs, output_hidden_states=True).hidden_states[2]
        expected = target.lm_head(target.model.norm(hidden))
        assert torch.allclose(draft(input_ids=inputs).logits, expected, atol=1e-5)
    assert len(draft.model.layers) == 2
    with pytest.raises(ValueError, match=r"exit layer must be in \[1, 2\]"):
        early_exit(target, 3)
