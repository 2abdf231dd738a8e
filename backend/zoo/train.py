"""Resumable training stages: the target on next-token loss, the students by distillation, then
the target again on a mixture of ordinary and copy windows (``sample_copy_batch``), or on induction
batches (``sample_induction_batch``: repeated spans with the loss on the repeats, ordinary windows)
with a supervised induction-head loss (``InductionLoss``).

Every random choice is a function of ``(seed, stage, step)``: the batch of step ``s`` is drawn
from ``numpy.random.default_rng([seed, stage_id, s])`` and the learning rate is a pure function of
``s``. A stage saves a checkpoint (models, optimisers, step, loss history, wall time) every
``checkpoint_every`` steps, atomically; restarting the build loads it and carries on from the next
step, producing the same weights as an uninterrupted run.

Learning-rate schedule (warm-up, stable, decay): linear warm-up over ``w`` steps, the peak rate
until the last ``DECAY_FRACTION`` of the ``S`` steps, then cosine decay to 10 % of the peak:
``lr(s) = lr_max * (0.1 + 0.9 * 0.5 * (1 + cos(pi * (s - d) / (S - d))))`` for ``s >= d = decay_start(S)``.
Until ``d`` the rate does not depend on ``S``, so a checkpoint taken before the decay of both budgets
can be continued under another step budget (``zoo build --target-steps N`` after an interrupted build
reuses the steps already done) and gives the same weights as an uninterrupted run with budget ``N``.
"""

from __future__ import annotations

import math
import os
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from backend.zoo.recipe import CopyStage, InductionRows, StageBudget

STAGE_IDS = {"target": 1, "distill": 2, "copy": 3}


@dataclass
class StageResult:
    """What a finished stage reports into the training record."""

    name: str
    steps: int
    tokens: int
    wall_seconds: float
    losses: dict[str, list[float]]  # model name -> loss per step


DECAY_FRACTION = 0.3


def decay_start(budget: StageBudget) -> int:
    """First step of the decay phase; steps before it are identical for every total budget."""
    return max(budget.warmup_steps, budget.steps - math.ceil(DECAY_FRACTION * budget.steps))


def learning_rate(step: int, budget: StageBudget) -> float:
    if step < budget.warmup_steps:
        return budget.learning_rate * (step + 1) / budget.warmup_steps
    start = decay_start(budget)
    if step < start:
        return budget.learning_rate
    progress = min(1.0, (step - start) / max(1, budget.steps - start))
    return budget.learning_rate * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def sample_batch(
    streams: Sequence[np.ndarray], batch: int, context: int, seed: int, stage: str, step: int
) -> torch.Tensor:
    """``batch`` windows of ``context + 1`` tokens; row ``r`` comes from stream ``r mod len(streams)``."""
    rng = np.random.default_rng([seed, STAGE_IDS[stage], step])
    rows = []
    for row in range(batch):
        stream = streams[row % len(streams)]
        start = int(rng.integers(0, len(stream) - context - 1))
        rows.append(stream[start : start + context + 1].astype(np.int64))
    return torch.from_numpy(np.stack(rows))


def copy_window(
    stream: np.ndarray, markers: Sequence[np.ndarray], length: int, spec: CopyStage, rng: np.random.Generator
) -> np.ndarray:
    """``length`` tokens: a span of ``stream``, then (marker, revision) repeated, cut at ``length``.

    Every token is a token of ``stream`` or of a marker: the span is a slice of it, and an edit
    replaces every occurrence of one of the span's tokens by a token drawn from elsewhere in it.
    The first revision is the span, edited with probability ``spec.edit_probability``; later
    revisions repeat the first, so the text to copy is always the latest copy.
    """
    span_length = int(rng.integers(spec.min_span, spec.max_span + 1))
    start = int(rng.integers(0, len(stream) - span_length))
    span = stream[start : start + span_length]
    marker = markers[int(rng.integers(0, len(markers)))]
    revision = span
    if rng.random() < spec.edit_probability:
        old = span[int(rng.integers(0, span_length))]
        new = stream[int(rng.integers(0, len(stream)))]
        revision = np.where(span == old, new, span).astype(stream.dtype)
    parts, total = [span], span_length
    while total < length:
        parts += [marker, revision]
        total += len(marker) + span_length
    return np.concatenate(parts)[:length]


def sample_copy_batch(
    streams: Sequence[np.ndarray],
    markers: Sequence[Sequence[np.ndarray]],
    spec: CopyStage,
    context: int,
    seed: int,
    step: int,
) -> torch.Tensor:
    """``spec.budget.batch`` rows of ``context + 1`` tokens: the first ``spec.copy_rows`` are copy
    windows (``copy_window``), the others ordinary windows; row ``r`` comes from stream
    ``r mod len(streams)`` with that stream's ``markers``. A function of ``(seed, step)`` only."""
    rng = np.random.default_rng([seed, STAGE_IDS["copy"], step])
    rows = []
    for row in range(spec.budget.batch):
        index = row % len(streams)
        stream = streams[index]
        if row < spec.copy_rows:
            window = copy_window(stream, markers[index], context + 1, spec, rng)
        else:
            start = int(rng.integers(0, len(stream) - context - 1))
            window = stream[start : start + context + 1]
        rows.append(window.astype(np.int64))
    return torch.from_numpy(np.stack(rows))


def repeat_window(
    stream: np.ndarray, length: int, min_span: int, max_span: int, rng: np.random.Generator, scattered: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``length`` tokens: a span of ``min_span``..``max_span`` tokens of ``stream`` repeated until the
    row is full, and a 0/1 mask of the same length marking the tokens of the repeats that copying
    predicts (every repeat's tokens but its first).  The span is a contiguous slice of ``stream``, or
    with ``scattered`` tokens drawn from independent positions of it (at their frequency in it)."""
    span_length = int(rng.integers(min_span, max_span + 1))
    if scattered:
        span = stream[rng.integers(0, len(stream), span_length)]
    else:
        start = int(rng.integers(0, len(stream) - span_length))
        span = stream[start : start + span_length]
    copies = -(-length // span_length)
    tokens = np.tile(span, copies)[:length]
    mask = np.ones(copies * span_length, dtype=np.float32)
    mask[:span_length] = 0.0
    mask[span_length::span_length] = 0.0
    return tokens, mask[:length]


@dataclass
class BatchPart:
    """Rows of one length in a copy-stage batch: ``tokens`` [rows, length + 1]; next-token loss
    weighted ``weight``, counted where ``loss_mask`` [rows, length] is 1 (``None``: everywhere);
    ``induction``: the rows also carry the induction-head loss."""

    tokens: torch.Tensor
    weight: float
    loss_mask: torch.Tensor | None
    induction: bool


def sample_induction_batch(
    streams: Sequence[np.ndarray], rows: InductionRows, seed: int, step: int
) -> list[BatchPart]:
    """The batch of step ``step`` of an induction copy stage (``InductionRows``): random-span rows,
    text-span rows, ordinary rows, in that order; row ``r`` of each kind comes from stream
    ``r mod len(streams)``. A function of ``(seed, step)`` only."""
    rng = np.random.default_rng([seed, STAGE_IDS["copy"], step])
    parts = []
    kinds = (
        (rows.random_rows, rows.random_length, rows.random_min_span, rows.random_max_span, True),
        (rows.repeat_rows, rows.repeat_length, rows.repeat_min_span, rows.repeat_max_span, False),
    )
    for count, length, low, high, scattered in kinds:
        if count == 0:
            continue
        windows = [
            repeat_window(streams[r % len(streams)], length + 1, low, high, rng, scattered)
            for r in range(count)
        ]
        tokens = torch.from_numpy(np.stack([w.astype(np.int64) for w, _ in windows]))
        mask = torch.from_numpy(np.stack([m for _, m in windows]))[:, 1:]
        weight = (rows.random_weight if step >= rows.random_from else 0.0) if scattered else 1.0
        parts.append(BatchPart(tokens, weight, mask, True))
    if rows.text_rows:
        text = []
        for r in range(rows.text_rows):
            stream = streams[r % len(streams)]
            start = int(rng.integers(0, len(stream) - rows.text_length - 1))
            text.append(stream[start : start + rows.text_length + 1].astype(np.int64))
        parts.append(BatchPart(torch.from_numpy(np.stack(text)), 1.0, None, False))
    return parts


class InductionLoss:
    """The induction-head loss of ``InductionRows``: hooks on the attention of the heads' layers
    (Llama attention: ``q_proj``, ``k_proj``, rotary position embeddings) recompute those heads'
    attention log-probabilities on the last forward pass; ``__call__`` scores them. ``close``
    removes the hooks."""

    def __init__(self, model: Any, heads: Sequence[tuple[int, int]]) -> None:
        self.heads = tuple(heads)
        self.inputs: dict[int, tuple[Any, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]] = {}
        self.handles = []
        for layer in sorted({layer for layer, _ in self.heads}):
            attention = model.model.layers[layer].self_attn
            self.handles.append(attention.register_forward_pre_hook(self._hook(layer), with_kwargs=True))

    def _hook(self, layer: int) -> Callable[..., None]:
        def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            cos, sin = kwargs["position_embeddings"]
            self.inputs[layer] = (module, hidden, (cos.detach(), sin.detach()))

        return hook

    def head_log_attention(self, layer: int, head: int) -> torch.Tensor:
        """[batch, T, T] log attention of ``head`` of ``layer`` on the last forward pass."""
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        module, hidden, (cos, sin) = self.inputs[layer]
        batch, length, _ = hidden.shape
        size = module.head_dim
        query = module.q_proj(hidden).view(batch, length, -1, size).transpose(1, 2)[:, head : head + 1]
        key = module.k_proj(hidden).view(batch, length, -1, size).transpose(1, 2)[:, head : head + 1]
        query, key = apply_rotary_pos_emb(query, key, cos, sin)
        scores = (query @ key.transpose(-1, -2))[:, 0] * module.scaling
        causal = torch.ones(length, length, dtype=torch.bool).tril()
        return scores.masked_fill(~causal, float("-inf")).log_softmax(-1)

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        """Mean over heads of the mean over positions ``t >= 1`` of ``-log`` attention on the targets."""
        length = inputs.shape[1]
        previous = torch.cat([torch.full_like(inputs[:, :1], -1), inputs[:, :-1]], 1)
        causal = torch.ones(length, length, dtype=torch.bool).tril()
        targets = (previous[:, None, :] == inputs[:, :, None]) & causal
        sink = torch.zeros(length, dtype=torch.bool)
        sink[0] = True
        targets = targets | (~targets.any(-1, keepdim=True) & sink)
        total = inputs.new_zeros((), dtype=torch.float32)
        for layer, head in self.heads:
            picked = self.head_log_attention(layer, head).masked_fill(~targets, float("-inf"))
            total = total - torch.logsumexp(picked, -1)[:, 1:].mean()
        return total / len(self.heads)

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        self.inputs.clear()


def _save_atomic(state: dict[str, Any], path: Path) -> None:
    temporary = path.with_suffix(".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


def run_stage(
    stage: str,
    students: dict[str, torch.nn.Module],
    teacher: torch.nn.Module | None,
    budget: StageBudget,
    streams: Sequence[np.ndarray],
    context: int,
    seed: int,
    weight_decay: float,
    checkpoint: Path,
    checkpoint_every: int,
    stop_after: int | None = None,
    sampler: Callable[[int], torch.Tensor | list[BatchPart]] | None = None,
    induction: InductionLoss | None = None,
    head_weight: float = 1.0,
    lr_scales: dict[str, float] | None = None,
    tokens_per_step: int | None = None,
) -> StageResult | None:
    """Train ``students`` for ``budget.steps`` steps (cross-entropy without a teacher, KL with one).

    The batch of step ``s`` is ``sampler(s)`` if given, else ``sample_batch`` of ``streams``; a sampler
    may return ``BatchPart`` lists (the induction copy stage: masked, weighted cross-entropy per part,
    plus ``head_weight`` times ``induction`` on the parts that ask for it). ``lr_scales`` maps
    parameter names to multiples of the learning rate (others: 1).
    Resumes from ``checkpoint`` if it exists. ``stop_after`` ends the call early once that many
    steps are done in total (an interruption, for tests and short sessions) and returns ``None``.
    """
    optimisers = {
        name: torch.optim.AdamW(
            _parameter_groups(model, lr_scales), lr=budget.learning_rate, weight_decay=weight_decay
        )
        for name, model in students.items()
    }
    losses: dict[str, list[float]] = {name: [] for name in students}
    first_step, wall = 0, 0.0
    if checkpoint.exists():
        state = load_checkpoint(checkpoint)
        _check_reusable(checkpoint, state, budget)
        for name, model in students.items():
            model.load_state_dict(state["models"][name])
            optimisers[name].load_state_dict(state["optimisers"][name])
        losses, first_step, wall = state["losses"], state["step"], state["wall_seconds"]

    def save(step: int) -> None:
        _save_atomic(
            {
                "step": step,
                "models": {name: model.state_dict() for name, model in students.items()},
                "optimisers": {name: opt.state_dict() for name, opt in optimisers.items()},
                "losses": losses,
                "wall_seconds": wall,
                "budget_steps": budget.steps,
            },
            checkpoint,
        )

    last = budget.steps if stop_after is None else min(budget.steps, stop_after)
    for model in students.values():
        model.train()
    bar = tqdm(range(first_step, last), initial=first_step, total=budget.steps, desc=f"{stage}", unit="step")
    started = time.perf_counter()
    for step in bar:
        batch: torch.Tensor | list[BatchPart]
        if sampler is None:
            batch = sample_batch(streams, budget.batch, context, seed, stage, step)
        else:
            batch = sampler(step)
        rate = learning_rate(step, budget)
        if isinstance(batch, list):
            for name, model in students.items():
                optimiser = optimisers[name]
                _set_rates(optimiser, rate)
                optimiser.zero_grad(set_to_none=True)
                value = sum(_part_backward(model, part, induction, head_weight) for part in batch)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimiser.step()
                losses[name].append(value)
        else:
            inputs, labels = batch[:, :-1], batch[:, 1:]
            teacher_log_probs = None
            if teacher is not None:
                with torch.no_grad():
                    teacher_log_probs = F.log_softmax(teacher(input_ids=inputs).logits.float(), dim=-1)
            for name, model in students.items():
                loss = _loss(model, inputs, labels, teacher_log_probs)
                optimiser = optimisers[name]
                _set_rates(optimiser, rate)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimiser.step()
                losses[name].append(float(loss.detach()))
        bar.set_postfix({name[:10]: f"{values[-1]:.3f}" for name, values in losses.items()})
        if (step + 1) % checkpoint_every == 0 or step + 1 == last:
            wall_now = wall + time.perf_counter() - started
            wall, started = wall_now, time.perf_counter()
            save(step + 1)
    bar.close()
    if last < budget.steps:
        return None
    per_step = budget.batch * context if tokens_per_step is None else tokens_per_step
    return StageResult(stage, budget.steps, budget.steps * per_step, wall, losses)


def _parameter_groups(model: torch.nn.Module, lr_scales: dict[str, float] | None) -> list[dict[str, Any]]:
    """One AdamW group per learning-rate scale (a single group of scale 1 without ``lr_scales``)."""
    groups: dict[float, list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        groups.setdefault((lr_scales or {}).get(name, 1.0), []).append(parameter)
    return [{"params": params, "lr_scale": scale} for scale, params in groups.items()]


def _set_rates(optimiser: torch.optim.Optimizer, rate: float) -> None:
    for group in optimiser.param_groups:
        scale = group.get("lr_scale", 1.0)
        group["lr"] = rate if scale == 1.0 else rate * scale


def _part_backward(
    model: torch.nn.Module, part: BatchPart, induction: InductionLoss | None, head_weight: float
) -> float:
    """Backpropagate one batch part's loss (gradients accumulate); returns its value."""
    inputs, labels = part.tokens[:, :-1], part.tokens[:, 1:]
    logits = model(input_ids=inputs).logits.float()
    losses = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none")
    if part.loss_mask is None:
        loss = losses.mean()
    else:
        loss = (losses * part.loss_mask).sum() / part.loss_mask.sum().clamp_min(1.0)
    total = part.weight * loss
    if part.induction and induction is not None:
        total = total + head_weight * induction(inputs)
    total.backward()
    return float(total.detach())


def load_checkpoint(checkpoint: Path) -> dict[str, Any]:
    """A training checkpoint, read with ``weights_only=True``: tensors, numbers, lists and dicts only.

    The work folder is just files on disk; unpickling arbitrary objects from it would run whatever
    code a planted file names.  Our checkpoints hold nothing else, so a file that needs more (or is
    not a checkpoint at all) is refused with what to do.
    """
    try:
        state = torch.load(checkpoint, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:
        raise ValueError(
            f"{checkpoint}: not a checkpoint this build wrote, or holds more than tensors and numbers "
            f"({type(error).__name__}); delete it to start this stage again"
        ) from None
    if not isinstance(state, dict) or not {"models", "optimisers", "step"} <= set(state):
        raise ValueError(f"{checkpoint}: not a training checkpoint (keys missing); delete it to start again")
    return state


def _check_reusable(checkpoint: Path, state: dict[str, Any], budget: StageBudget) -> None:
    """A checkpoint written under another step budget is reusable only if it stopped before either decay."""
    written_for = int(state.get("budget_steps", budget.steps))
    if written_for == budget.steps:
        return
    old = StageBudget(written_for, budget.batch, budget.learning_rate, budget.warmup_steps)
    limit = min(decay_start(old), decay_start(budget))
    if state["step"] > limit:
        raise ValueError(
            f"{checkpoint}: written at step {state['step']} of a {written_for}-step budget, past the start "
            f"of the learning-rate decay (step {limit}); it cannot continue a {budget.steps}-step budget. "
            f"Rerun with the {written_for}-step budget, or delete the file to start this stage again."
        )


def _loss(
    model: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor, teacher_log_probs: torch.Tensor | None
) -> torch.Tensor:
    logits = model(input_ids=inputs).logits.float()
    if teacher_log_probs is None:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
    student_log_probs = F.log_softmax(logits, dim=-1)
    # forward KL(p_teacher || q_student), summed over the vocabulary, averaged over positions
    kl = (teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)).sum(-1)
    return kl.mean()
