"""The copy stage's induction rows: repeated spans with a loss on the repeats, and the supervised
induction-head loss (attention on the token after the last occurrence of the current token)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from backend.zoo import build as zoo_build
from backend.zoo import recipe as zoo_recipe
from backend.zoo.recipe import CopyStage, InductionRows, ModelSpec, StageBudget
from backend.zoo.train import InductionLoss, StageResult, repeat_window, sample_induction_batch

STREAMS = [np.random.default_rng(s).integers(50 * s, 50 * s + 50, 3000).astype(np.uint16) for s in (0, 1)]
ROWS = InductionRows(
    random_rows=2, random_length=24, repeat_rows=2, repeat_length=20, text_rows=2, text_length=16,
    heads=((1, 0),), random_min_span=3, random_max_span=6, repeat_min_span=4, repeat_max_span=8,
    random_weight=0.5, random_from=2,
)  # fmt: skip


def contains(stream: np.ndarray, part: np.ndarray) -> bool:
    windows = np.lib.stride_tricks.sliding_window_view(stream, len(part))
    return bool((windows == part).all(axis=1).any())


@pytest.mark.parametrize("scattered", [False, True])
def test_repeat_window_repeats_a_span_and_masks_all_but_the_repeats(scattered: bool) -> None:
    stream = STREAMS[0]
    for seed in range(20):
        tokens, mask = repeat_window(stream, 41, 4, 9, np.random.default_rng(seed), scattered)
        assert tokens.shape == mask.shape == (41,)
        span = int(np.argmax(mask[1:] == 1))  # the first repeat's first token is masked too
        assert 4 <= span <= 9 and mask[:span].sum() == 0 and mask[span] == 0
        assert np.array_equal(tokens[span:], np.tile(tokens[:span], 10)[: 41 - span])
        expected = np.ones(41)
        expected[:span] = 0
        expected[span::span] = 0
        assert np.array_equal(mask, expected)
        assert set(tokens.tolist()) <= set(stream.tolist())
        if not scattered:
            assert contains(stream, tokens[:span])


def test_induction_batches_are_seeded_rows_of_their_streams_with_the_random_loss_from_its_step() -> None:
    for step in range(4):
        parts = sample_induction_batch(STREAMS, ROWS, 0, step)
        again = sample_induction_batch(STREAMS, ROWS, 0, step)
        assert [p.tokens.shape for p in parts] == [(2, 25), (2, 21), (2, 17)]
        assert all(torch.equal(a.tokens, b.tokens) for a, b in zip(parts, again, strict=True))
        random, repeated, text = parts
        assert random.weight == (0.5 if step >= ROWS.random_from else 0.0) and repeated.weight == 1.0
        assert random.induction and repeated.induction and not text.induction and text.loss_mask is None
        for part in (random, repeated):
            assert part.loss_mask is not None and part.loss_mask.shape == (2, part.tokens.shape[1] - 1)
        for row in range(2):  # row r from stream r mod 2 (disjoint token ranges)
            for part in parts:
                assert set(part.tokens[row].tolist()) <= set(STREAMS[row].tolist())
            assert contains(STREAMS[row], text.tokens[row].numpy().astype(np.uint16))
            assert contains(STREAMS[row], repeated.tokens[row, :4].numpy().astype(np.uint16))
    assert not torch.equal(sample_induction_batch(STREAMS, ROWS, 0, 0)[0].tokens, parts[0].tokens)


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    return LlamaForCausalLM(config)


def test_induction_loss_is_the_heads_attention_on_the_token_after_the_last_occurrence() -> None:
    model = tiny_llama().eval()
    model.set_attn_implementation("eager")
    loss = InductionLoss(model, [(1, 0), (0, 1)])
    inputs = torch.tensor([[5, 6, 7, 8, 5, 6, 7, 9, 9, 5], [1, 2, 3, 1, 2, 3, 1, 2, 3, 4]])
    with torch.no_grad():
        attentions = model(input_ids=inputs, output_attentions=True).attentions
        value = float(loss(inputs))
        for layer, head in loss.heads:  # the recomputed attention is the model's
            assert torch.allclose(
                loss.head_log_attention(layer, head).exp(), attentions[layer][:, head], atol=1e-5
            )
    expected = 0.0
    for layer, head in loss.heads:
        weights = attentions[layer][:, head]
        for b, row in enumerate(inputs.tolist()):
            terms = []
            for t in range(1, len(row)):
                targets = [j for j in range(1, t + 1) if row[j - 1] == row[t]] or [0]  # else the sink
                terms.append(-np.log(float(weights[b, t, targets].sum())))
            expected += np.mean(terms) / len(inputs)
    assert value == pytest.approx(expected / 2, rel=1e-4)
    loss.close()
    assert all(not layer.self_attn._forward_pre_hooks for layer in model.model.layers)


def test_train_to_copy_with_induction_rows_resumes_bit_for_bit_from_the_fp16_target(tmp_path: Path) -> None:
    recipe = replace(
        zoo_recipe.SMALL,
        members=(ModelSpec("t", hidden=32, layers=2, heads=2, intermediate=64),),
        copy_stage=CopyStage(StageBudget(4, 6, 1e-3, 1), 0, induction=ROWS),
        checkpoint_every=2,
    )
    streams = [s.astype(np.uint16) % 100 for s in STREAMS]

    def run(work: Path, stop_after: int | None) -> tuple[LlamaForCausalLM, StageResult | None]:
        model = tiny_llama(3)
        work.mkdir(exist_ok=True)
        return model, zoo_build.train_to_copy(recipe, model, None, streams, work, stop_after)

    whole, result = run(tmp_path / "a", None)
    assert result is not None and result.steps == 4 and result.tokens == 4 * ROWS.tokens_per_step
    assert all(not layer.self_attn._forward_pre_hooks for layer in whole.model.layers)  # hooks removed
    assert run(tmp_path / "b", 2)[1] is None
    resumed, again = run(tmp_path / "b", None)
    assert again is not None and again.losses == result.losses
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    name = "model.layers.1.self_attn.q_proj.weight"
    assert not torch.equal(tiny_llama(3).state_dict()[name], whole.state_dict()[name])  # it trained


def test_attention_only_copy_stage_leaves_everything_but_attention_as_it_was(tmp_path: Path) -> None:
    rows = replace(ROWS, attention_only=True)
    recipe = replace(
        zoo_recipe.SMALL,
        members=(ModelSpec("t", hidden=32, layers=2, heads=2, intermediate=64),),
        copy_stage=CopyStage(StageBudget(3, 6, 1e-3, 1), 0, induction=rows),
    )
    model = tiny_llama(4)
    start = {name: value.half().float() for name, value in model.state_dict().items()}  # the fp16 target
    streams = [s.astype(np.uint16) % 100 for s in STREAMS]
    assert zoo_build.train_to_copy(recipe, model, None, streams, tmp_path, None) is not None
    for name, value in model.state_dict().items():
        assert torch.equal(value, start[name]) != (".self_attn." in name), name


def test_induction_rows_change_the_copy_stage_only_and_older_recipes_keep_their_digests() -> None:
    trial = replace(zoo_recipe.FULL, copy_stage=zoo_recipe.INDUCTION_COPY_STAGE)
    for stage in ("target", "distill"):
        assert trial.stage_key(stage) == zoo_recipe.FULL.stage_key(stage)
    assert trial.digest() != zoo_recipe.FULL.digest()
    assert trial.to_dict()["copy_stage"]["induction"]["heads"] == ((2, 4), (4, 1))  # type: ignore[index]
    # a copy stage without induction rows is recorded as before they existed (same digest)
    assert "induction" not in zoo_recipe.SMALL.to_dict()["copy_stage"]  # type: ignore[operator]
    experimental = replace(zoo_recipe.FULL, copy_stage=zoo_recipe.EXPERIMENTAL_COPY_STAGE)
    assert "induction" not in experimental.to_dict()["copy_stage"]  # type: ignore[operator]
