"""Trace replay helpers of the batched engine: prompts of a requested length, context clipping.

Traces hold lengths, not text (docs/design.md §6).  A :class:`PromptSource` turns a
:class:`traces.request.Request` into prompt token ids of exactly ``prompt_tokens`` tokens:

* :class:`CorpusPrompts` -- text from the prompt corpus of :mod:`backend.prompts` (held-out
  text tagged by domain), tokenized by the ladder's tokenizer;
* :class:`RandomTokenPrompts` -- seeded random token ids, for token-id-only ladders (tests with
  tiny random models) where there is no tokenizer and no corpus.

Both are deterministic functions of ``(seed, request)``, so a seeded replay is repeatable.

:func:`clip_to_context` keeps every request inside the smallest context window of the ladder:
a trace may ask for a 7,000-token prompt of a 512-position model.  The output budget is kept
when it fits in half the window, otherwise cut to half; the prompt takes what remains.  Every
clip is counted and reported (the engine prints one warning with the counts and writes them to
``run.json``), never silent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from traces.request import Request


class PromptSource(Protocol):
    """Prompt token ids of a request (``len == request.prompt_tokens``)."""

    name: str

    def prompt_ids(self, request: Request) -> list[int]: ...


class RandomTokenPrompts:
    """Seeded random token ids in ``[low, vocab_size)``; one stream per request id."""

    name = "random-tokens"

    def __init__(self, vocab_size: int, seed: int = 0, low: int = 4) -> None:
        if vocab_size <= low:
            raise ValueError(f"RandomTokenPrompts: vocab_size {vocab_size} must exceed low {low}")
        self.vocab_size = vocab_size
        self.seed = seed
        self.low = low

    def prompt_ids(self, request: Request) -> list[int]:
        rng = np.random.default_rng([self.seed, request.request_id])
        return rng.integers(self.low, self.vocab_size, size=request.prompt_tokens).tolist()


class CorpusPrompts:
    """Prompts cut from the domain-tagged prompt corpus (:mod:`backend.prompts`).

    A request whose domain the corpus lacks (a trace tag like ``"conversation"``) gets text of
    a domain drawn by its seeded stream; :attr:`unknown_domains` counts those tags.  Requests
    whose text is given (``prompt_text``) are tokenized as they are when long enough.
    """

    name = "corpus"

    def __init__(self, tokenizer: Any, seed: int = 0, corpus: Any | None = None) -> None:
        from backend.prompts import load_prompt_corpus

        self.tokenizer = tokenizer
        self.seed = seed
        self.corpus = corpus if corpus is not None else load_prompt_corpus()
        self.domains: tuple[str, ...] = tuple(self.corpus.domains)
        self.unknown_domains: dict[str, int] = {}

    def prompt_ids(self, request: Request) -> list[int]:
        if request.prompt_text is not None:
            ids = list(self.tokenizer(request.prompt_text, add_special_tokens=False)["input_ids"])
            if len(ids) >= request.prompt_tokens:
                return ids[len(ids) - request.prompt_tokens :]
        domain = request.domain
        if domain is not None and domain not in self.domains:
            self.unknown_domains[domain] = self.unknown_domains.get(domain, 0) + 1
            domain = None
        return list(
            self.corpus.materialise(
                self.tokenizer, request.prompt_tokens, domain, [self.seed, request.request_id]
            )
        )


class FixedPrompts:
    """Given prompts by request id (benchmarks: the same prompts for every method)."""

    name = "fixed"

    def __init__(self, prompts: Sequence[Sequence[int]]) -> None:
        self.prompts = [list(p) for p in prompts]

    def prompt_ids(self, request: Request) -> list[int]:
        prompt = self.prompts[request.request_id]
        if len(prompt) != request.prompt_tokens:
            raise ValueError(
                f"request {request.request_id} asks for {request.prompt_tokens} prompt tokens; "
                f"the fixed prompt has {len(prompt)}"
            )
        return list(prompt)


def prompt_source_for(ladder: Any, seed: int = 0, ladder_dir: str | Path | None = None) -> PromptSource:
    """Corpus prompts when the ladder has a tokenizer and a corpus it can encode, else random ids.

    The corpus is ``ladder_dir/prompts.jsonl`` when that exists (a ladder built by ``specrouter
    zoo build`` ships its own), else the embedded default.  A corpus the tokenizer encodes to
    mostly unknown tokens (a test ladder's word-level vocabulary) is useless: random ids instead.
    """
    tokenizer = getattr(ladder, "tokenizer", None)
    if tokenizer is None:
        return RandomTokenPrompts(int(ladder.vocab_size), seed)
    try:
        from backend.prompts import load_prompt_corpus

        own = Path(ladder_dir) / "prompts.jsonl" if ladder_dir is not None else None
        corpus = load_prompt_corpus(own if own is not None and own.is_file() else None)
        source = CorpusPrompts(tokenizer, seed, corpus)
        sample = source.prompt_ids(Request(0, 0.0, 64, 1, None))
    except (ImportError, OSError, ValueError):
        return RandomTokenPrompts(int(ladder.vocab_size), seed)
    unknown = getattr(tokenizer, "unk_token_id", None)
    if unknown is not None and sample.count(unknown) > len(sample) // 2:
        return RandomTokenPrompts(int(ladder.vocab_size), seed)
    return source


@dataclass
class ClipReport:
    """How many requests :func:`clip_to_context` shortened, and an example of each kind."""

    window: int
    prompts_clipped: int = 0
    outputs_clipped: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def any(self) -> bool:
        return bool(self.prompts_clipped or self.outputs_clipped)

    def message(self) -> str:
        return (
            f"warning: {self.prompts_clipped} prompt(s) and {self.outputs_clipped} output budget(s) were "
            f"clipped to fit the ladder's {self.window}-position context window"
            + (f" (e.g. {'; '.join(self.examples[:3])})" if self.examples else "")
        )


def clip_to_context(request: Request, window: int, report: ClipReport) -> Request:
    """``request`` with ``prompt_tokens + output_tokens <= window`` (output first, at most half)."""
    prompt, output = max(1, request.prompt_tokens), max(1, request.output_tokens)
    if prompt + output <= window:
        return (
            request
            if (prompt, output) == (request.prompt_tokens, request.output_tokens)
            else (request._replace(prompt_tokens=prompt, output_tokens=output))
        )
    new_output = min(output, max(1, window // 2))
    new_prompt = min(prompt, window - new_output)
    report.outputs_clipped += new_output < output
    report.prompts_clipped += new_prompt < prompt
    if len(report.examples) < 3:
        report.examples.append(
            f"request {request.request_id}: {prompt}+{output} -> {new_prompt}+{new_output}"
        )
    return request._replace(prompt_tokens=new_prompt, output_tokens=new_output)


def context_window(models: Sequence[Any]) -> int:
    """The smallest ``max_position_embeddings`` of the ladder's models."""
    return min(int(getattr(m.config, "max_position_embeddings", 2048) or 2048) for m in models)


def source_domains(source: PromptSource) -> tuple[str | None, ...]:
    """The domains a prompt source can serve (``(None,)`` when it has no domain tags)."""
    domains = getattr(source, "domains", None)
    return tuple(domains) if domains else (None,)


PROFILE_PROMPT_IDS = 1_000_000
"""First request id of the prompts a profile measures on: far from any workload's ids, so a
profile is never measured on the prompts of the run it predicts (same corpus, other windows)."""


def prompt_set(
    source: PromptSource,
    count: int,
    length: int,
    domains: Sequence[str | None] | None = None,
    first_id: int = 0,
) -> dict[str, list[list[int]]]:
    """``count`` prompts of ``length`` tokens per domain, keyed by domain (``"all"`` for None).

    The prompts are the source's for request ids ``first_id, first_id + 1, ...``.
    """
    out: dict[str, list[list[int]]] = {}
    request_id = first_id
    for domain in domains if domains is not None else source_domains(source):
        prompts = []
        for _ in range(count):
            prompts.append(source.prompt_ids(Request(request_id, 0.0, length, 1, domain)))
            request_id += 1
        out[domain or "all"] = prompts
    return out
