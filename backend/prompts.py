"""The prompt corpus: held-out text, tagged by domain, from which trace prompts are materialised.

Traces carry lengths, not text (docs/design.md §6). :class:`PromptCorpus` holds chunks of held-out text
(never trained on) from ``backend/zoo/default/prompts.jsonl``, one JSON object per line::

    {"domain": "code" | "prose" | ..., "source": "stdlib/foo.py", "text": "..."}

``edit`` prompts (``backend.zoo.corpus.edit_prompt``: held-out text followed by revised copies of
it) are a *derived* domain: a request asks for them by tag; an untagged request (``domain=None``)
draws among the other domains only, so untagged seeded workloads did not change when it was added.

``materialise(tokenizer, n_tokens, domain, rng)`` returns exactly ``n_tokens`` token ids of real text
of that domain: it picks a starting chunk with ``rng``, tokenizes that chunk and the ones after it
(the next chunks of the same file, then the following files, wrapping round the domain) until there
are enough tokens, starts at a random token offset within the first chunk, and cuts to length. The
result is a deterministic function of (corpus, tokenizer, n_tokens, domain, rng state).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

RngLike = np.random.Generator | int | Sequence[int]
DERIVED_DOMAINS = frozenset({"edit"})  # served when asked for by tag, never drawn for an untagged request


@dataclass(frozen=True)
class PromptChunk:
    domain: str
    source: str
    text: str


def _generator(rng: RngLike) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)  # an int or a sequence of ints is a seed


def _encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens (HF tokenizers and ``tokenizers.Tokenizer``)."""
    try:
        encoded = tokenizer.encode(text, add_special_tokens=False)
    except TypeError:
        encoded = tokenizer.encode(text)
    ids = getattr(encoded, "ids", encoded)
    return [int(i) for i in ids]


class PromptCorpus:
    """Held-out text chunks grouped by domain, in file order."""

    def __init__(self, chunks: Sequence[PromptChunk], origin: str = "<memory>") -> None:
        if not chunks:
            raise ValueError(f"{origin}: the prompt corpus is empty")
        self.origin = origin
        self._by_domain: dict[str, list[PromptChunk]] = {}
        for chunk in chunks:
            self._by_domain.setdefault(chunk.domain, []).append(chunk)

    @classmethod
    def load(cls, path: Path | str) -> PromptCorpus:
        """Read a JSON-lines corpus; a bad line raises ``ValueError`` naming the file, line and key."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: prompt corpus not found (run `specrouter zoo build`)")
        chunks = []
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from None
                if not isinstance(record, dict):
                    raise ValueError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
                for key in ("domain", "text"):
                    value = record.get(key)
                    if not isinstance(value, str) or not value:
                        raise ValueError(
                            f"{path}:{number}: key {key!r} must be a non-empty string, got {value!r}"
                        )
                chunks.append(PromptChunk(record["domain"], str(record.get("source", "")), record["text"]))
        return cls(chunks, str(path))

    @classmethod
    def default(cls) -> PromptCorpus:
        """The corpus shipped with the default ladder."""
        from backend.zoo import default_ladder_dir

        return cls.load(default_ladder_dir() / "prompts.jsonl")

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(sorted(self._by_domain))

    @property
    def untagged_domains(self) -> tuple[str, ...]:
        """The domains an untagged request draws from: all but ``DERIVED_DOMAINS`` (all if none is left)."""
        plain = tuple(d for d in self.domains if d not in DERIVED_DOMAINS)
        return plain or self.domains

    def chunks(self, domain: str) -> list[PromptChunk]:
        self._check_domain(domain)
        return list(self._by_domain[domain])

    def _check_domain(self, domain: str) -> None:
        if domain not in self._by_domain:
            raise ValueError(f"unknown prompt domain {domain!r}; {self.origin} has {list(self.domains)}")

    def materialise(self, tokenizer: Any, n_tokens: int, domain: str | None, rng: RngLike) -> list[int]:
        """Exactly ``n_tokens`` ids of held-out ``domain`` text (``None``: one of
        :attr:`untagged_domains` drawn by ``rng``)."""
        if isinstance(n_tokens, bool) or not isinstance(n_tokens, int | np.integer) or n_tokens < 0:
            raise ValueError(f"n_tokens must be a non-negative integer, got {n_tokens!r}")
        generator = _generator(rng)
        if domain is None:
            drawn = self.untagged_domains
            domain = drawn[int(generator.integers(len(drawn)))]
        self._check_domain(domain)
        chunks = self._by_domain[domain]
        first = int(generator.integers(len(chunks)))
        ids = _encode(tokenizer, chunks[first].text)
        offset = int(generator.integers(max(1, len(ids) // 2)))
        ids = ids[offset:]
        index = first
        while len(ids) < n_tokens:
            index = (index + 1) % len(chunks)
            more = _encode(tokenizer, chunks[index].text)
            if not more and index == first:
                raise ValueError(f"{self.origin}: domain {domain!r} encodes to no tokens")
            ids.extend(more)
        return ids[:n_tokens]

    def __len__(self) -> int:
        return sum(len(chunks) for chunks in self._by_domain.values())


def load_prompt_corpus(path: Path | str | None = None) -> PromptCorpus:
    """The corpus at ``path``, or the shipped default."""
    return PromptCorpus.default() if path is None else PromptCorpus.load(path)


def materialise_prompt(
    corpus: PromptCorpus, tokenizer: Any, n_tokens: int, domain: str | None, rng: RngLike
) -> list[int]:
    """Function form of :meth:`PromptCorpus.materialise`."""
    return corpus.materialise(tokenizer, n_tokens, domain, rng)
