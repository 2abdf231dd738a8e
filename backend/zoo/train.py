"""Resumable training stages: the target on next-token loss, the students by distillation, then
the target again on a mixture of ordinary and copy windows (``sample_copy_batch``).

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

from backend.zoo.recipe import CopyStage, StageBudget

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
    sampler: Callable[[int], torch.Tensor] | None = None,
) -> StageResult | None:
    """Train ``students`` for ``budget.steps`` steps (cross-entropy without a teacher, KL with one).

    The batch of step ``s`` is ``sampler(s)`` if given, else ``sample_batch`` of ``streams``.
    Resumes from ``checkpoint`` if it exists. ``stop_after`` ends the call early once that many
    steps are done in total (an interruption, for tests and short sessions) and returns ``None``.
    """
    optimisers = {
        name: torch.optim.AdamW(model.parameters(), lr=budget.learning_rate, weight_decay=weight_decay)
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
        if sampler is None:
            batch = sample_batch(streams, budget.batch, context, seed, stage, step)
        else:
            batch = sampler(step)
        inputs, labels = batch[:, :-1], batch[:, 1:]
        teacher_log_probs = None
        if teacher is not None:
            with torch.no_grad():
                teacher_log_probs = F.log_softmax(teacher(input_ids=inputs).logits.float(), dim=-1)
        rate = learning_rate(step, budget)
        for name, model in students.items():
            loss = _loss(model, inputs, labels, teacher_log_probs)
            optimiser = optimisers[name]
            for group in optimiser.param_groups:
                group["lr"] = rate
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
    return StageResult(stage, budget.steps, budget.steps * budget.batch * context, wall, losses)


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
