"""The ``edit`` prompt domain: built from held-out text only, deterministically, continuations that
copy the prompt, the ``code``/``prose`` entries untouched, and served to requests tagged ``edit``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from backend.prompts import PromptChunk, PromptCorpus
from backend.replay import CorpusPrompts
from backend.zoo import corpus, default_ladder_dir
from backend.zoo.build import write_prompts
from traces.request import Request

LADDER = default_ladder_dir()
PROMPTS = LADDER / "prompts.jsonl"
# the code and prose lines of prompts.jsonl as they were before the edit domain (seeded workloads
# of those domains depend on them): their number and the SHA-256 of those lines, in file order
BASE_COUNTS = {"code": 314, "prose": 123}
BASE_SHA256 = "b31a7957b702e23e332749433d308755100c97a66e7ba79d984b4645608862a7"
CONTINUATION_TOKENS = 64


def shipped_lines() -> list[bytes]:
    return PROMPTS.read_bytes().splitlines(keepends=True)


def shipped_records() -> list[dict[str, str]]:
    return [json.loads(line) for line in shipped_lines()]


def edit_records() -> list[dict[str, str]]:
    return [r for r in shipped_records() if r["domain"] == corpus.EDIT_DOMAIN]


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return AutoTokenizer.from_pretrained(
        str(LADDER / json.loads((LADDER / "ladder.json").read_text())["models"][-1])
    )


def held_file(domain: str, name: str, text: str) -> corpus.SourceFile:
    """A file whose name is held out (the split is by a hash of the name)."""
    for i in range(1000):
        candidate = f"{name}{i}"
        if corpus.is_held_out(candidate):
            return corpus.SourceFile(domain, candidate, text)
    raise AssertionError("no held-out name found")


CODE = "".join(
    f"def handler_{i}(value):\n    total = value + {i}\n    return total * total\n\n" for i in range(60)
)
PROSE = "".join(
    f"Paragraph {i}: permission is granted to copy this software, provided that the notice is kept.\n"
    for i in range(40)
)


def test_base_entries_are_unchanged_and_come_first() -> None:
    lines = shipped_lines()
    records = [json.loads(line) for line in lines]
    base = sum(BASE_COUNTS.values())
    assert {d: sum(r["domain"] == d for r in records[:base]) for d in BASE_COUNTS} == BASE_COUNTS
    assert hashlib.sha256(b"".join(lines[:base])).hexdigest() == BASE_SHA256
    assert all(r["domain"] == corpus.EDIT_DOMAIN for r in records[base:])  # edit entries appended
    assert len(records) > base


def test_manifest_counts_match_the_file() -> None:
    manifest = json.loads((LADDER / "ladder.json").read_text())
    counts: dict[str, int] = {}
    for record in shipped_records():
        counts[record["domain"]] = counts.get(record["domain"], 0) + 1
    assert manifest["prompts"]["chunks_per_domain"] == counts
    assert set(counts) == set(corpus.PROMPT_DOMAINS)


def test_builder_is_deterministic_and_matches_the_chunks_it_revises(tmp_path: Path) -> None:
    files = [held_file("code", "pkg/mod.py", CODE), held_file("prose", "doc/x/copyright", PROSE)]
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    counts = corpus.write_prompt_corpus(files, first)
    corpus.write_prompt_corpus(list(files), second)
    assert first.read_bytes() == second.read_bytes()
    records = [json.loads(line) for line in first.read_text().splitlines()]
    base = [r for r in records if r["domain"] != corpus.EDIT_DOMAIN]
    edits = [r for r in records if r["domain"] == corpus.EDIT_DOMAIN]
    assert counts == {"code": counts["code"], "prose": counts["prose"], "edit": len(edits)}
    assert len(edits) == len(base) > 2  # every chunk of these files has a passage
    for chunk, edit in zip(base, edits, strict=True):
        assert edit["source"] == chunk["source"]
        passage = corpus.edit_passage(chunk["text"])
        assert passage is not None and chunk["text"].startswith(passage)
        assert edit["text"].startswith(passage)


def test_long_edit_prompts_keep_fewer_revisions_or_are_dropped() -> None:
    piece = "line one of the passage\nline two of the passage\nline three\n"
    by_chars = len  # one "token" per character
    full = corpus.edit_prompt(piece, "prose", by_chars, max_tokens=10_000)
    assert full is not None and full.count("Revised:") == corpus.EDIT_REVISIONS
    assert corpus.edit_prompt(piece, "prose") == corpus.edit_prompt(piece, "prose", corpus.utf8_bytes)
    shorter = corpus.edit_prompt(piece, "prose", by_chars, max_tokens=len(full) - 1)
    assert shorter is not None and shorter.count("Revised:") == corpus.EDIT_REVISIONS - 1
    assert full.startswith(shorter)
    assert corpus.edit_prompt(piece, "prose", by_chars, max_tokens=len(piece)) is None


def test_builder_refuses_training_files(tmp_path: Path) -> None:
    trained = next(
        corpus.SourceFile("code", f"train{i}.py", CODE)
        for i in range(100)
        if not corpus.is_held_out(f"train{i}.py")
    )
    with pytest.raises(ValueError, match="not a held-out file"):
        corpus.write_prompt_corpus([trained], tmp_path / "p.jsonl")


def test_shipped_edit_prompts_come_from_held_out_chunks_of_their_source() -> None:
    records = shipped_records()
    chunks_by_source: dict[str, list[str]] = {}
    for record in records:
        if record["domain"] != corpus.EDIT_DOMAIN:
            chunks_by_source.setdefault(record["source"], []).append(record["text"])
    edits = edit_records()
    assert len(edits) >= 100
    for edit in edits:
        assert corpus.is_held_out(edit["source"])
        passage = edit["text"].split(corpus.EDIT_SEPARATORS["code"])[0]
        prose_passage = edit["text"].split(corpus.EDIT_SEPARATORS["prose"])[0]
        candidates = {passage, prose_passage}
        assert any(corpus.edit_passage(chunk) in candidates for chunk in chunks_by_source[edit["source"]]), (
            edit["source"]
        )


def split_edit(text: str) -> tuple[str, str, list[str]]:
    """(domain of the separator, passage, revisions) of an edit prompt."""
    for domain, separator in corpus.EDIT_SEPARATORS.items():
        parts = text.split(separator)
        if 2 <= len(parts) <= corpus.EDIT_REVISIONS + 1:
            return domain, parts[0], parts[1:]
    raise AssertionError(f"no separator splits {text[:80]!r} into 2 to {corpus.EDIT_REVISIONS + 1} parts")


def test_edit_continuations_are_copies_of_the_prompt() -> None:
    """Past the first revision every line is a line seen before; the first revision is the passage
    with one rename (code) or one word in capitals (prose), line for line."""
    renamed = 0
    for edit in edit_records():
        domain, passage, revisions = split_edit(edit["text"])
        assert revisions == [corpus.revise(passage, domain)] * len(revisions)
        first = revisions[0]
        assert len(first.splitlines()) == len(passage.splitlines())
        changed = [a != b for a, b in zip(passage.splitlines(), first.splitlines(), strict=True)]
        renamed += any(changed)
        lines = edit["text"].splitlines()
        start = (
            len(passage.splitlines())
            + len(corpus.EDIT_SEPARATORS[domain].splitlines())
            + len(first.splitlines())
        )
        for i in range(start, len(lines)):
            assert lines[i] in lines[:i], (edit["source"], lines[i])
    assert renamed >= len(edit_records()) // 2  # most prompts carry a real edit


def test_revise_renames_whole_identifiers_only() -> None:
    text = "    name = names[0]\n    return name + rename(name)\n"
    assert corpus.revise(text, "code") == "    new_name = names[0]\n    return new_name + rename(new_name)\n"
    assert (
        corpus.revise("self.x = 1\nself.x = 2\n", "code") == "self.x = 1\nself.x = 2\n"
    )  # too short, self kept
    assert corpus.revise("the licence and the licence\nof the code\n", "prose") == (
        "the LICENCE and the LICENCE\nof the code\n"
    )


def test_edit_prompts_fit_the_context_with_the_continuation(tokenizer: Any) -> None:
    manifest = json.loads((LADDER / "ladder.json").read_text())
    budget = int(manifest["context_tokens"]) - CONTINUATION_TOKENS
    longest = max(len(tokenizer(r["text"], add_special_tokens=False)["input_ids"]) for r in edit_records())
    assert longest <= budget


def test_prompt_source_serves_edit_prompts_to_edit_requests(tokenizer: Any) -> None:
    source = CorpusPrompts(tokenizer, seed=3)
    assert "edit" in source.domains
    stream: list[int] = []
    for record in edit_records():
        stream.extend(tokenizer(record["text"], add_special_tokens=False)["input_ids"])
    windows = [source.prompt_ids(Request(i, 0.0, 96, 8, "edit")) for i in range(6)]
    assert source.unknown_domains == {}
    for ids in windows:
        assert len(ids) == 96
        text = tokenizer.decode(ids)
        assert "# revised:" in text or "Revised:" in text
        head = ids[:12]
        assert any(stream[k : k + 96] == ids for k in range(len(stream)) if stream[k : k + 12] == head)
    code = source.prompt_ids(Request(99, 0.0, 96, 8, "code"))
    assert "# revised:" not in tokenizer.decode(code)


def test_rebuild_reproduces_the_shipped_file(tmp_path: Path, tokenizer: Any) -> None:
    """On a machine with the same corpus (same digest as ladder.json records) the builder writes
    the shipped prompts.jsonl byte for byte."""
    files = corpus.load_corpus()
    recorded = json.loads((LADDER / "ladder.json").read_text())["training"]["corpus_digest"]
    if corpus.corpus_digest(files) != recorded:
        pytest.skip("this machine's stdlib / licence texts differ from the ones the ladder was built on")
    counts = write_prompts(corpus.split(files)[1], tmp_path / "prompts.jsonl", tokenizer)
    assert (tmp_path / "prompts.jsonl").read_bytes() == PROMPTS.read_bytes()
    assert counts == json.loads((LADDER / "ladder.json").read_text())["prompts"]["chunks_per_domain"]


def test_corpus_exposes_the_edit_domain() -> None:
    shipped = PromptCorpus.default()
    assert shipped.domains == ("code", "edit", "prose")
    assert corpus.DOMAINS == ("code", "prose")  # the models' training domains are unchanged


def test_seeded_prompts_of_other_requests_are_unchanged_by_the_edit_domain(tokenizer: Any) -> None:
    """Tagged code/prose requests and untagged ones get the same ids as from the corpus without edit."""
    records = shipped_records()
    full = PromptCorpus([PromptChunk(r["domain"], r["source"], r["text"]) for r in records])
    base = PromptCorpus(
        [PromptChunk(r["domain"], r["source"], r["text"]) for r in records if r["domain"] != "edit"]
    )
    assert full.untagged_domains == base.domains == ("code", "prose")
    for seed in range(12):
        for domain in (None, "code", "prose"):
            assert full.materialise(tokenizer, 48, domain, seed) == base.materialise(
                tokenizer, 48, domain, seed
            )
    edit_only = PromptCorpus([PromptChunk("edit", "x", "a b c " * 40)])
    assert edit_only.untagged_domains == ("edit",)  # a corpus of derived prompts only still serves untagged
