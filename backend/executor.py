"""Execute ``policies.plan.round_calls`` on real models, for a batch of sequences at once.

Public API (stable; the engine builds on it)::

    executor = MultiLevelExecutor(ladder, SamplingConfig(temperature=0.8, top_k=20), seed=0)
    executor.add(seq_id, prompt_ids, domain="code")
    outcomes = executor.step({seq_id: (route, room), ...}, now=time.perf_counter)
    outcomes[seq_id].tokens      # tokens the target committed this round
    outcomes[seq_id].feedback    # policies.contract.RoundFeedback for policy.observe()
    executor.tokens(seq_id)      # prompt + everything committed so far
    executor.remove(seq_id)

How a step runs: every sequence gets its own round generator (the same one the simulator
drives, so the order and count of model calls are identical in both worlds).  Repeatedly, the
pending calls are grouped by model; the **cheapest** model with pending calls runs one batched
forward pass for all of them (draft steps and verifications of different sequences share it),
each sequence's outcome is sent back into its generator, and so on until every round is done.
Running the cheapest model first lets the sequences waiting for an expensive model accumulate,
so the target's verifications are batched together.

Per sequence and chain level the executor keeps a buffer of *tentative* tokens beyond the
committed ones.  A level-``j`` sub-round starts from level ``j``'s buffer: after every
``Verify`` at level ``j``, the buffers of all lower levels are reset to it.  ``Verify`` at level
``j`` scores the tokens level ``j-1`` emitted since (``buffer[j-1][len(buffer[j]):]``), accepts a
prefix by :mod:`backend.sampling` with ``q`` = the distribution of the model that produced each
token (recorded with the token), and emits one more token.  Each tentative token carries the
distributions every model computed at its position (given the same prefix), which gives TV
samples for every pair of models that scored a verified position, not only chain neighbours.

``lean=True`` runs every model through :class:`backend.lean.LeanKV` (preallocated KV buffers,
a few tensor ops per layer) instead of the Hugging Face forward; Llama-family models only.

Randomness: one ``torch.Generator`` per sequence, seeded from ``(seed, seq_id)``, so a sequence's
output does not depend on which other sequences share its batches, and seeded runs repeat bit
for bit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from backend.kv_state import ModelKV, ScoreRequest
from backend.ladder import Ladder
from backend.lean import LeanKV
from backend.sampling import (
    SamplingConfig,
    processed_probs,
    sample_index,
    total_variation,
    verify_greedy,
    verify_sampled,
)
from policies.contract import LevelFeedback, PairTV, PassTiming, RoundFeedback, Route
from policies.plan import Call, DraftStep, RoundCounts, RoundGen, Verify, round_calls


class VerifyRule(NamedTuple):
    """How verification hands up ``q``; anything but the default is a deliberately WRONG variant.

    ``q_from_drafter=True`` verifies every token against the drafter's distribution instead of
    the producer's; ``residual=False`` resamples from the full ``p`` after a rejection.  Both
    exist only so the tests can show the statistical test catches them.
    """

    q_from_drafter: bool = False
    residual: bool = True


LOSSLESS = VerifyRule()
"""The correct rule (the default)."""


class RoundOutcome(NamedTuple):
    tokens: tuple[int, ...]
    """Tokens the target committed this round (truncated after an end-of-sequence token)."""
    feedback: RoundFeedback


class _Entry(NamedTuple):
    """A tentative token: its id, who emitted it, every model's distribution at its position."""

    token: int
    producer: int
    dists: dict[int, torch.Tensor]


@dataclass
class _Sequence:
    tokens: list[int]
    generator: torch.Generator
    domain: str | None


@dataclass
class _Round:
    seq_id: int
    route: Route
    room: int
    plan: RoundGen
    call: Call | None
    buffers: list[list[_Entry]]
    started: float
    passes: list[list[PassTiming]] = field(default_factory=list)
    tv: dict[tuple[int, int], list[float]] = field(default_factory=dict)
    counts: RoundCounts | None = None


class MultiLevelExecutor:
    """Runs multi-level speculative rounds for many sequences on one :class:`~backend.ladder.Ladder`."""

    def __init__(
        self,
        ladder: Ladder,
        sampling: SamplingConfig | None = None,
        seed: int = 0,
        rule: VerifyRule = LOSSLESS,
        eos_token_id: int | None = None,
        lean: bool = False,
    ) -> None:
        self.ladder = ladder
        self.sampling = sampling or SamplingConfig()
        self.seed = seed
        self.rule = rule
        self.eos_token_id = eos_token_id if eos_token_id is not None else ladder.eos_token_id
        self.states: list[ModelKV | LeanKV] = [
            LeanKV(model, ladder.vocab_size) if lean else ModelKV(model, ladder.vocab_size)
            for model in ladder.models
        ]
        self._sequences: dict[int, _Sequence] = {}
        self._sync = ladder.device.type == "cuda"

    # ---- sequences -------------------------------------------------------------------------
    def add(self, seq_id: int, prompt_ids: Sequence[int], domain: str | None = None) -> None:
        """Register a sequence; its prompt is prefilled lazily by the first pass of each model."""
        if seq_id in self._sequences:
            raise ValueError(f"sequence {seq_id} is already in the executor")
        if len(prompt_ids) == 0:
            raise ValueError(f"sequence {seq_id}: the prompt must hold at least one token")
        bad = [t for t in prompt_ids if not 0 <= int(t) < self.ladder.vocab_size]
        if bad:
            raise ValueError(
                f"sequence {seq_id}: token ids {bad[:5]} outside the vocabulary "
                f"0..{self.ladder.vocab_size - 1}"
            )
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + seq_id) % (2**63))
        self._sequences[seq_id] = _Sequence([int(t) for t in prompt_ids], generator, domain)

    def tokens(self, seq_id: int) -> list[int]:
        """Prompt plus every token committed so far."""
        return list(self._sequences[seq_id].tokens)

    def remove(self, seq_id: int) -> None:
        self._sequences.pop(seq_id, None)
        for state in self.states:
            state.remove(seq_id)

    def __contains__(self, seq_id: int) -> bool:
        return seq_id in self._sequences

    # ---- rounds ----------------------------------------------------------------------------
    def step(
        self,
        routes: Mapping[int, tuple[Route, int]],
        now: Callable[[], float] = time.perf_counter,
    ) -> dict[int, RoundOutcome]:
        """Run one round for every ``seq_id -> (route, room)``; ``room`` = output tokens still allowed."""
        started = now()
        active: dict[int, _Round] = {}
        for seq_id, (route, room) in routes.items():
            if seq_id not in self._sequences:
                raise KeyError(f"sequence {seq_id} was never added to the executor")
            if route.target != self.ladder.target:
                raise ValueError(
                    f"route {route} targets M{route.target}; this ladder's target is M{self.ladder.target}"
                )
            plan = round_calls(route, room)
            levels = len(route.chain)
            state = _Round(seq_id, route, room, plan, next(plan), [[] for _ in range(levels)], started)
            state.passes = [[] for _ in range(levels)]
            active[seq_id] = state
        outcomes: dict[int, RoundOutcome] = {}
        while active:
            model = min(state.call.model for state in active.values() if state.call is not None)
            group = [
                state for state in active.values() if state.call is not None and state.call.model == model
            ]
            answers = self._run_group(model, group)
            for state, answer in zip(group, answers):
                try:
                    state.call = state.plan.send(answer)
                except StopIteration as stop:
                    state.counts = stop.value
                    state.call = None
                    outcomes[state.seq_id] = self._finish(state, now())
                    del active[state.seq_id]
        return outcomes

    def _source(self, state: _Round, call: Call) -> tuple[list[_Entry], int]:
        """The buffer a call reads and how many logits rows it needs."""
        if isinstance(call, DraftStep):
            return state.buffers[0], 1
        below = state.buffers[call.level - 1] if call.level > 0 else state.buffers[0]
        base = len(state.buffers[call.level])
        if len(below) - base != call.candidates:
            raise RuntimeError(
                f"sequence {state.seq_id}: level {call.level} expected {call.candidates} candidates, "
                f"the level below holds {len(below) - base}"
            )
        return below, call.candidates + 1

    def _run_group(self, model: int, group: list[_Round]) -> list[int | None]:
        requests = []
        for state in group:
            assert state.call is not None
            source, n_logits = self._source(state, state.call)
            committed = self._sequences[state.seq_id].tokens
            requests.append(ScoreRequest(state.seq_id, committed + [e.token for e in source], n_logits))
        if self._sync:
            torch.cuda.synchronize()
        began = time.perf_counter()
        results = self.states[model].score(requests)
        if self._sync:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - began
        answers: list[int | None] = []
        for state, result in zip(group, results):
            call = state.call
            assert call is not None
            state.passes[call.level].append(PassTiming(model, result.fed, len(group), seconds))
            if isinstance(call, DraftStep):
                self._draft(state, model, result.logits)
                answers.append(None)
            else:
                answers.append(self._verify(state, call, result.logits))
        return answers

    def _draft(self, state: _Round, model: int, logits: torch.Tensor) -> None:
        probs = processed_probs(logits, self.sampling)[0]
        if self.sampling.greedy:
            token = int(torch.argmax(logits[0]))
        else:
            generator = self._sequences[state.seq_id].generator
            token = sample_index(probs, float(torch.rand((), generator=generator, dtype=torch.float64)))
        state.buffers[0].append(_Entry(token, model, {model: probs}))

    def _verify(self, state: _Round, call: Verify, logits: torch.Tensor) -> int:
        model, level = call.model, call.level
        buffers = state.buffers
        base = len(buffers[level])
        source = buffers[level - 1] if level > 0 else buffers[0]
        candidates = source[base:]
        probs = processed_probs(logits, self.sampling)
        tokens = [entry.token for entry in candidates]
        if self.sampling.greedy:
            verdict = verify_greedy(logits, tokens)
        else:
            drafter = state.route.chain[0]
            q_rows = [self._q_for(entry, drafter) for entry in candidates]
            generator = self._sequences[state.seq_id].generator
            uniforms = torch.rand(len(tokens) + 1, generator=generator, dtype=torch.float64).tolist()
            verdict = verify_sampled(probs, q_rows, tokens, uniforms, self.rule.residual)
        self._record_tv(state, model, candidates, probs)
        # an accepted candidate is now *emitted by this level*: the level above must use this
        # model's distribution as q for it (DESIGN.md §1), not the drafter's
        kept = [
            _Entry(e.token, model, {**e.dists, model: probs[i]})
            for i, e in enumerate(candidates[: verdict.accepted])
        ]
        position_dists = (
            dict(candidates[verdict.accepted].dists) if verdict.accepted < len(candidates) else {}
        )
        position_dists[model] = probs[verdict.accepted]
        new_buffer = buffers[level] + kept + [_Entry(verdict.token, model, position_dists)]
        for lower in range(level + 1):
            buffers[lower] = list(new_buffer)
        return verdict.accepted

    def _q_for(self, entry: _Entry, drafter: int) -> torch.Tensor:
        if self.rule.q_from_drafter and drafter in entry.dists:
            return entry.dists[drafter]
        return entry.dists[entry.producer]

    @staticmethod
    def _record_tv(state: _Round, model: int, candidates: list[_Entry], probs: torch.Tensor) -> None:
        """TV(p_lower, p_model) at every candidate position, for every lower model that scored it."""
        for index, entry in enumerate(candidates):
            for lower, dist in entry.dists.items():
                if lower != model:
                    value = float(total_variation(dist, probs[index]))
                    state.tv.setdefault((lower, model), []).append(value)

    def _finish(self, state: _Round, finished: float) -> RoundOutcome:
        counts = state.counts
        assert counts is not None
        emitted_tokens = [entry.token for entry in state.buffers[-1]]
        if len(emitted_tokens) != counts.emitted[-1]:
            raise RuntimeError(
                f"sequence {state.seq_id}: target emitted {len(emitted_tokens)} tokens, "
                f"plan says {counts.emitted[-1]}"
            )
        done = counts.emitted[-1] >= state.room
        if self.eos_token_id is not None and self.eos_token_id in emitted_tokens:
            emitted_tokens = emitted_tokens[: emitted_tokens.index(self.eos_token_id) + 1]
            done = True
        self._sequences[state.seq_id].tokens.extend(emitted_tokens)
        chain = state.route.chain
        levels = []
        for level, model in enumerate(chain):
            emitted = len(emitted_tokens) if level == len(chain) - 1 else counts.emitted[level]
            levels.append(
                LevelFeedback(
                    model, counts.proposed[level], counts.accepted[level], emitted, tuple(state.passes[level])
                )
            )
        tv = tuple(PairTV(lower, upper, tuple(values)) for (lower, upper), values in sorted(state.tv.items()))
        domain = self._sequences[state.seq_id].domain
        feedback = RoundFeedback(
            state.seq_id, domain, state.route, state.started, finished, tuple(levels), tv, done
        )
        return RoundOutcome(tuple(emitted_tokens), feedback)
