from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from backend.kv_state import ModelKV, ScoreRequest
from backend.ladder import Ladder
from backend.lean import LeanKV, kv_state
from backend.ngram import point_mass
from backend.replay import context_window
from backend.sampling import (
    SamplingConfig,
    processed_probs,
    sample_index,
    total_variation,
    verify_greedy,
    verify_sampled,
)
from policies.contract import RoundFeedback, Route
from policies.serving import DRAFT, LOOKUP, Pass, ServingConfig, Slot, run_rounds
from traces.request import Request


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
    slot: Slot | None = None  # the slot ``step`` drives (the engine's loop brings its own)
    round_id: int = -1  # the round the buffers belong to
    buffers: list[list[_Entry]] = field(default_factory=list)
    committed: tuple[int, ...] = ()  # tokens the last finished round committed


@dataclass(frozen=True)
class PassClock:
    """When a pass ran (``record_passes``): what the profiler's loop-overhead fit reads."""

    model: int
    rows: int
    width: int
    rounds_ending: int
    forward_s: float
    started: float  # perf_counter before the pass's inputs were built
    ended: float  # perf_counter after every row's draft / verification


PromptFor = Callable[[Slot], Sequence[int]]


class MultiLevelExecutor:
    """Runs multi-level speculative passes for many sequences on one :class:`~backend.ladder.Ladder`."""

    def __init__(
        self,
        ladder: Ladder,
        sampling: SamplingConfig | None = None,
        seed: int = 0,
        rule: VerifyRule = LOSSLESS,
        eos_token_id: int | None = None,
        lean: bool = False,
        serving: ServingConfig | None = None,
    ) -> None:
        self.ladder = ladder
        self.sampling = sampling or SamplingConfig()
        self.seed = seed
        self.rule = rule
        self.eos_token_id = eos_token_id if eos_token_id is not None else ladder.eos_token_id
        vocab = ladder.vocab_size
        # per ladder member; the model-free lookup drafter (member 0, if any) has no KV state
        self.states: list[ModelKV | LeanKV | None] = [None] * ladder.offset
        self.states.extend(kv_state(model, vocab, lean) for model in ladder.models)
        self.model_free = ladder.info.model_free
        self.serving = serving or ServingConfig(slots=0)
        self.window = context_window(ladder.models)
        self.prompt_for: PromptFor | None = None
        """The engine's prompt source: a sequence the loop admitted is registered on its first pass."""
        self.record_passes = False
        self.pass_clocks: list[PassClock] = []
        self._sequences: dict[int, _Sequence] = {}
        self._sync = ladder.device.type == "cuda"

    # ---- sequences -------------------------------------------------------------------------
    def add(self, seq_id: int, prompt_ids: Sequence[int], domain: str | None = None) -> None:
        """Register a sequence; its prompt is prefilled lazily by the first pass of each model."""
        if seq_id in self._sequences:
            raise ValueError(f"sequence {seq_id} is already in the executor")
        if len(prompt_ids) == 0:
            raise ValueError(f"sequence {seq_id}: the prompt must hold at least one token")
        if len(prompt_ids) >= self.window:
            raise ValueError(
                f"sequence {seq_id}: a prompt of {len(prompt_ids)} tokens leaves no room in the ladder's "
                f"context window of {self.window} positions (clip it first: backend.replay.clip_to_context)"
            )
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
            if state is not None:
                state.remove(seq_id)

    def __contains__(self, seq_id: int) -> bool:
        return seq_id in self._sequences

    # ---- rounds ----------------------------------------------------------------------------
    def step(
        self,
        routes: Mapping[int, tuple[Route, int]],
        now: Callable[[], float] = time.perf_counter,
    ) -> dict[int, RoundOutcome]:
        """Run one round for every ``seq_id -> (route, room)``; ``room`` = output tokens still allowed.

        The passes are formed by :func:`policies.serving.run_rounds`, the serving loop's own
        pass former (cheapest model first, every pending call on it batched).
        """
        started = now()
        slots = []
        for seq_id, (route, room) in routes.items():
            sequence = self._sequences.get(seq_id)
            if sequence is None:
                raise KeyError(f"sequence {seq_id} was never added to the executor")
            if route.target != self.ladder.target:
                raise ValueError(
                    f"route {route} targets M{route.target}; this ladder's target is M{self.ladder.target}"
                )
            if len(sequence.tokens) + room > self.window:
                raise ValueError(
                    f"sequence {seq_id}: {len(sequence.tokens)} tokens + room {room} exceed the ladder's "
                    f"context window of {self.window} positions"
                )
            slot = sequence.slot
            if slot is None:
                request = Request(seq_id, 0.0, len(sequence.tokens), room, sequence.domain)
                slot = sequence.slot = Slot(request, len(self.states), self.model_free)
            slot.budget = slot.generated + room
            slot.stop_at = 0
            slot.begin_round(route, room, started)
            slots.append(slot)
        outcomes: dict[int, RoundOutcome] = {}
        for slot, feedback, _ in run_rounds(slots, self.run_pass, self.serving, now):
            outcomes[slot.request_id] = RoundOutcome(self._sequences[slot.request_id].committed, feedback)
        return outcomes

    def run_pass(self, step: Pass) -> None:
        """Run one batched pass of ``step.model`` over ``step.rows``; fill its outcomes and time."""
        began = time.perf_counter()
        model = step.model
        state = self.states[model]
        if state is None:
            self._run_lookup(step, began)
            return
        requests = []
        for slot, keep in zip(step.rows, step.keeps):
            sequence = self._sequence(slot)
            source = sequence.buffers[slot.source_level()]
            candidates = slot.call_candidates
            if candidates != DRAFT and len(source) - len(sequence.buffers[slot.call_level]) != candidates:
                raise RuntimeError(
                    f"sequence {slot.request_id}: level {slot.call_level} expected {candidates} candidates, "
                    f"the level below holds {len(source) - len(sequence.buffers[slot.call_level])}"
                )
            rows = 1 if candidates == DRAFT else candidates + 1
            tokens = sequence.tokens + [entry.token for entry in source]
            requests.append(ScoreRequest(slot.request_id, tokens, rows, keep))
        if self._sync:
            torch.cuda.synchronize()
        forward_began = time.perf_counter()
        results = state.score(requests)
        if self._sync:
            torch.cuda.synchronize()
        step.seconds = time.perf_counter() - forward_began
        for index, (slot, result) in enumerate(zip(step.rows, results)):
            if result.fed != step.feeds[index]:
                raise RuntimeError(
                    f"sequence {slot.request_id}: fed {result.fed} positions, the serving loop counted "
                    f"{step.feeds[index]}"
                )
            sequence = self._sequences[slot.request_id]
            if slot.call_candidates == DRAFT:
                self._draft(sequence, model, result.logits)
                continue
            step.accepted[index] = self._verify(sequence, slot, result.logits, step.collect)
            if slot.call_level == slot.top:
                self._commit_round(sequence, slot)
        if self.record_passes:
            ended = time.perf_counter()
            clock = PassClock(model, step.size, step.width, step.rounds_ending(), step.seconds, began, ended)
            self.pass_clocks.append(clock)

    def _run_lookup(self, step: Pass, began: float) -> None:
        """A pass of the model-free drafter: each row proposes up to ``slot.drafted`` tokens.

        Its distribution is a point mass at each proposed token (``q`` of the lossless rule);
        ``accepted`` carries the number proposed (0: the level above decodes by itself).
        """
        lookup = self.ladder.lookup
        assert lookup is not None
        vocab, model, device = self.ladder.vocab_size, step.model, self.ladder.device
        for index, slot in enumerate(step.rows):
            if slot.call_candidates != LOOKUP:
                raise RuntimeError(f"sequence {slot.request_id}: model-free M{model} was asked to score")
            sequence = self._sequence(slot)
            buffer = sequence.buffers[0]
            proposal = lookup.propose(sequence.tokens + [entry.token for entry in buffer], slot.drafted)
            buffer.extend(
                _Entry(token, model, {model: point_mass(token, vocab, device)}) for token in proposal
            )
            step.accepted[index] = len(proposal)
        ended = time.perf_counter()
        step.seconds = ended - began
        if self.record_passes:
            self.pass_clocks.append(PassClock(model, step.size, step.width, 0, step.seconds, began, ended))

    def _sequence(self, slot: Slot) -> _Sequence:
        """The sequence of ``slot``, registered from the engine's prompts on its first pass."""
        sequence = self._sequences.get(slot.request_id)
        if sequence is None:
            if self.prompt_for is None:
                raise KeyError(f"sequence {slot.request_id} was never added to the executor")
            self.add(slot.request_id, self.prompt_for(slot), slot.domain)
            sequence = self._sequences[slot.request_id]
        if sequence.round_id != slot.round_id:
            sequence.round_id = slot.round_id
            sequence.buffers = [[] for _ in slot.chain]
        return sequence

    def _draft(self, sequence: _Sequence, model: int, logits: torch.Tensor) -> None:
        probs = processed_probs(logits, self.sampling)[0]
        if self.sampling.greedy:
            token = int(torch.argmax(logits[0]))
        else:
            uniform = float(torch.rand((), generator=sequence.generator, dtype=torch.float64))
            token = sample_index(probs, uniform)
        sequence.buffers[0].append(_Entry(token, model, {model: probs}))

    def _verify(self, sequence: _Sequence, slot: Slot, logits: torch.Tensor, collect: bool) -> int:
        model, level = slot.call_model, slot.call_level
        buffers = sequence.buffers
        base = len(buffers[level])
        candidates = buffers[slot.source_level()][base:]
        probs = processed_probs(logits, self.sampling)
        tokens = [entry.token for entry in candidates]
        if self.sampling.greedy:
            verdict = verify_greedy(logits, tokens)
        else:
            drafter = slot.chain[0]
            q_rows = [self._q_for(entry, drafter) for entry in candidates]
            uniforms = torch.rand(len(tokens) + 1, generator=sequence.generator, dtype=torch.float64).tolist()
            verdict = verify_sampled(probs, q_rows, tokens, uniforms, self.rule.residual)
        if level > 0 and collect:
            lower = slot.chain[level - 1]
            slot.tv[level].extend(
                float(total_variation(entry.dists[lower], probs[i])) for i, entry in enumerate(candidates)
            )
        # an accepted candidate is now *emitted by this level*: the level above must use this
        # model's distribution as q for it (docs/design.md §1, "Lossless rule"), not the drafter's
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

    def _commit_round(self, sequence: _Sequence, slot: Slot) -> None:
        """The target verified: commit its tokens (up to an end-of-sequence token when one counts)."""
        emitted = [entry.token for entry in sequence.buffers[-1]]
        if self.eos_token_id is not None and self.eos_token_id in emitted:
            emitted = emitted[: emitted.index(self.eos_token_id) + 1]
            slot.stop_at = len(emitted)
        sequence.tokens.extend(emitted)
        sequence.committed = tuple(emitted)

    def _q_for(self, entry: _Entry, drafter: int) -> torch.Tensor:
        if self.rule.q_from_drafter and drafter in entry.dists:
            return entry.dists[drafter]
        return entry.dists[entry.producer]
