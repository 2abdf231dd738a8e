"""The prompt corpus: exact lengths, the right domain, determinism, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from transformers import PreTrainedTokenizerFast

from backend.prompts import PromptChunk, PromptCorpus, load_prompt_corpus, materialise_prompt
from backend.zoo import corpus as zoo_corpus
from backend.zoo.tokenizer import train_tokenizer

CODE_TEXT = "def add(a, b):\n    return a + b\n\nclass Box:\n    pass\n"
PROSE_TEXT = "Permission is hereby granted, free of charge, to any person obtaining a copy.\n"


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return train_tokenizer([CODE_TEXT * 20, PROSE_TEXT * 20], vocab_size=300)


@pytest.fixture(scope="module")
def corpus() -> PromptCorpus:
    # code chunks use only characters absent from the prose chunks and vice versa
    chunks = [PromptChunk("code", f"c{i}", "xyz_{}()=+" * (5 + i)) for i in range(4)]
    chunks += [PromptChunk("prose", f"p{i}", "mnop qrs. " * (5 + i)) for i in range(3)]
    return PromptCorpus(chunks, "test")


@pytest.mark.parametrize("n_tokens", [0, 1, 17, 300])
def test_materialise_returns_exactly_the_requested_length(
    corpus: PromptCorpus, tokenizer: PreTrainedTokenizerFast, n_tokens: int
) -> None:
    ids = corpus.materialise(tokenizer, n_tokens, "code", np.random.default_rng(1))
    assert len(ids) == n_tokens
    assert all(isinstance(i, int) for i in ids)


@pytest.mark.parametrize("domain,alphabet", [("code", set("xyz_{}()=+")), ("prose", set("mnop qrs."))])
def test_materialised_text_comes_from_the_requested_domain(
    corpus: PromptCorpus,
    tokenizer: PreTrainedTokenizerFast,
    domain: str,
    alphabet: set[str],
) -> None:
    for seed in range(5):
        text = tokenizer.decode(corpus.materialise(tokenizer, 80, domain, seed))
        assert text and set(text) <= alphabet


def test_materialise_is_deterministic_given_the_rng(
    corpus: PromptCorpus, tokenizer: PreTrainedTokenizerFast
) -> None:
    first = corpus.materialise(tokenizer, 40, None, [3, 7])
    assert corpus.materialise(tokenizer, 40, None, [3, 7]) == first
    assert materialise_prompt(corpus, tokenizer, 40, None, np.random.default_rng([3, 7])) == first
    others = {tuple(corpus.materialise(tokenizer, 40, "prose", seed)) for seed in range(8)}
    assert len(others) > 1  # the rng really chooses where the prompt starts


def test_unknown_domain_and_bad_length_are_refused(
    corpus: PromptCorpus, tokenizer: PreTrainedTokenizerFast
) -> None:
    with pytest.raises(ValueError, match=r"unknown prompt domain 'poetry'.*\['code', 'prose'\]"):
        corpus.materialise(tokenizer, 5, "poetry", 0)
    with pytest.raises(ValueError, match="non-negative integer"):
        corpus.materialise(tokenizer, -1, "code", 0)


def test_bad_corpus_lines_name_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text(
        json.dumps({"domain": "code", "text": "x = 1\n"}) + "\n" + json.dumps({"domain": "code"}) + "\n"
    )
    with pytest.raises(ValueError, match=r"prompts.jsonl:2: key 'text'"):
        PromptCorpus.load(path)
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match=r"prompts.jsonl:1: not valid JSON"):
        PromptCorpus.load(path)
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        load_prompt_corpus(tmp_path / "missing.jsonl")


def test_shipped_corpus_is_held_out_text_of_every_domain(tokenizer: PreTrainedTokenizerFast) -> None:
    shipped = PromptCorpus.default()
    assert set(shipped.domains) == {"code", "prose", "edit"}  # edit: built from held-out code and prose
    for domain in shipped.domains:
        chunks = shipped.chunks(domain)
        assert chunks
        assert all(zoo_corpus.is_held_out(chunk.source) for chunk in chunks)  # never trained on
        assert len(shipped.materialise(tokenizer, 600, domain, 0)) == 600
