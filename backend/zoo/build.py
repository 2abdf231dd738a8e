"""``specrouter zoo build``: corpus -> tokenizer -> target -> distilled students -> target taught
to copy -> fp16 ladder.

Layout of an output directory::

    OUT/ladder.json      {"format": 1, "models": [cheapest ... target], "tokenizer": ..., "training": ...}
    OUT/prompts.jsonl        held-out text chunks {"domain", "source", "text"} (backend.prompts), then
                             the "edit" prompts built from them (backend.zoo.corpus.edit_prompt)
    OUT/<model>/             Hugging Face save_pretrained: config.json, model.safetensors (fp16), tokenizer
    OUT/.work/               checkpoints and token caches (resumable; removed with --clean)

A build whose ``ladder.json`` records the same recipe digest is not redone (cache). An interrupted
build resumes from the last checkpoint of the unfinished stage.
"""

from __future__ import annotations

import json
import platform
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import tokenizers
import torch
import torch.nn.functional as F
import transformers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from backend.zoo import corpus
from backend.zoo.evaluate import argmax_agreement, evaluation_windows, held_out_loss
from backend.zoo.recipe import NO_COPY_STAGE, BuildRecipe, ModelSpec
from backend.zoo.tokenizer import END_OF_TEXT, load_tokenizer, train_tokenizer
from backend.zoo.train import InductionLoss, StageResult, run_stage, sample_copy_batch, sample_induction_batch

LADDER_FORMAT = 1
COPY_EVAL_SPAN = 100  # tokens per window of the held-out copy-loss check (as bench/copy_domain.py)


def is_built(out: Path, recipe: BuildRecipe) -> bool:
    manifest = out / "ladder.json"
    if not manifest.exists():
        return False
    data = json.loads(manifest.read_text())
    return data.get("training", {}).get("recipe_digest") == recipe.digest() and all(
        (out / name / "model.safetensors").exists() for name in data.get("models", [])
    )


def _new_model(spec: ModelSpec, recipe: BuildRecipe, tokenizer: PreTrainedTokenizerFast, seed: int) -> Any:
    torch.manual_seed(seed)
    eos = int(tokenizer.convert_tokens_to_ids(END_OF_TEXT))  # type: ignore[arg-type]
    config = LlamaConfig(**spec.config_kwargs(len(tokenizer), recipe.context, eos))
    return LlamaForCausalLM(config)


def _token_streams(
    files: list[corpus.SourceFile], tokenizer: PreTrainedTokenizerFast, cache: Path, limit: int | None
) -> dict[str, np.ndarray]:
    """Per domain, all files' tokens joined by ``<|endoftext|>`` (cached as .npy, uint16)."""
    streams = {}
    eos = tokenizer.convert_tokens_to_ids(END_OF_TEXT)
    for domain in corpus.DOMAINS:
        path = cache.with_name(f"{cache.name}-{domain}.npy")
        if path.exists():
            streams[domain] = np.load(path)
            continue
        ids: list[int] = []
        chars = 0
        for item in files:
            if item.domain != domain or (limit is not None and chars >= limit):
                continue
            ids.extend(tokenizer(item.text)["input_ids"] + [eos])
            chars += len(item.text)
        streams[domain] = np.asarray(ids, dtype=np.uint16)
        np.save(path, streams[domain])
    return streams


def build(
    recipe: BuildRecipe, out: Path, stop_after: int | None = None, threads: int = 2, log: Any = print
) -> dict[str, Any] | None:
    """Build (or resume, or find cached) the ladder of ``recipe`` in ``out``.

    Returns the ladder manifest, or ``None`` when ``stop_after`` interrupted a stage on purpose.
    """
    if is_built(out, recipe):
        log(f"{out}: already built with recipe {recipe.digest()} (nothing to do)")
        return json.loads((out / "ladder.json").read_text())
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _build(recipe, out, stop_after, log)
    finally:
        torch.set_num_threads(previous_threads)


def write_prompts(held_files: list[corpus.SourceFile], path: Path, tokenizer: Any) -> dict[str, int]:
    """``prompts.jsonl`` of the held-out files, edit prompts measured with the ladder's ``tokenizer``
    (``corpus.write_prompt_corpus``); rewriting the shipped file needs no training::

        write_prompts(corpus.split(corpus.load_corpus())[1], default_ladder_dir() / "prompts.jsonl",
                      AutoTokenizer.from_pretrained(default_ladder_dir() / "target-8m"))
    """

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return corpus.write_prompt_corpus(held_files, path, count)


def _build(recipe: BuildRecipe, out: Path, stop_after: int | None, log: Any) -> dict[str, Any] | None:
    started = time.perf_counter()
    work = out / ".work"
    work.mkdir(parents=True, exist_ok=True)
    files = corpus.load_corpus()
    train_files, held_files = corpus.split(files)
    log(f"corpus: {len(train_files)} training files, {len(held_files)} held-out files")

    tokenizer_dir = work / "tokenizer"
    if (tokenizer_dir / "tokenizer.json").exists():
        tokenizer = load_tokenizer(tokenizer_dir)
    else:
        tokenizer = train_tokenizer(
            _limited_texts(train_files, recipe.train_chars_per_domain), recipe.vocab_size
        )
        tokenizer.save_pretrained(str(tokenizer_dir))
    # the edit prompts are bounded in tokens, so the corpus is written once the tokenizer exists
    prompt_counts = write_prompts(held_files, out / "prompts.jsonl", tokenizer)
    train_streams = _token_streams(train_files, tokenizer, work / "train", recipe.train_chars_per_domain)
    held_streams = _token_streams(held_files, tokenizer, work / "held", None)
    streams = [train_streams[d] for d in corpus.DOMAINS]
    log("training tokens: " + ", ".join(f"{d} {len(s):,}" for d, s in train_streams.items()))

    members = {
        spec.name: _new_model(spec, recipe, tokenizer, recipe.seed + i)
        for i, spec in enumerate(recipe.members)
    }
    target_name = recipe.target.name
    stages = {}
    target_result = run_stage(
        "target", {target_name: members[target_name]}, None, recipe.target_stage, streams, recipe.context,
        recipe.seed, recipe.weight_decay, work / f"{recipe.stage_key('target')}.pt", recipe.checkpoint_every,
        stop_after,
    )  # fmt: skip
    if target_result is None:
        return None
    stages["target"] = target_result
    teacher = members[target_name].eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    remaining = None if stop_after is None else stop_after - recipe.target_stage.steps
    if remaining is not None and remaining <= 0:
        return None
    students = {spec.name: members[spec.name] for spec in recipe.students}
    distill_result = run_stage(
        "distill", students, teacher, recipe.distill_stage, streams, recipe.context, recipe.seed,
        recipe.weight_decay, work / f"{recipe.stage_key('distill')}.pt", recipe.checkpoint_every, remaining,
    )  # fmt: skip
    if distill_result is None:
        return None
    stages["distill"] = distill_result
    if recipe.copy_stage != NO_COPY_STAGE:
        remaining = None if remaining is None else remaining - recipe.distill_stage.steps
        if remaining is not None and remaining <= 0:
            return None
        copy_result = train_to_copy(recipe, members[target_name], tokenizer, streams, work, remaining)
        if copy_result is None:
            return None
        stages["copy"] = copy_result
    return _export(recipe, out, members, tokenizer, held_streams, stages, prompt_counts, files, started, log)


def copy_markers(tokenizer: Any) -> list[list[np.ndarray]]:
    """Per training stream (``corpus.DOMAINS`` order) the markers between a copy window's copies:
    the edit domain's separator (``# revised:`` / ``Revised:``), a newline, and nothing at all."""

    def ids(text: str) -> np.ndarray:
        return np.asarray(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.uint16)

    return [[ids(corpus.EDIT_SEPARATORS[domain]), ids("\n"), ids("")] for domain in corpus.DOMAINS]


def train_to_copy(
    recipe: BuildRecipe,
    target: Any,
    tokenizer: Any,
    streams: list[np.ndarray],
    work: Path,
    stop_after: int | None,
) -> StageResult | None:
    """The copy stage: ``target`` alone, from its weights rounded to fp16 (the target as a ladder
    stores it, so fine-tuning the shipped fp16 target gives the same weights), on ordinary and copy
    windows of the training ``streams`` (``train.sample_copy_batch``) or, with ``induction`` rows,
    on ``train.sample_induction_batch`` batches with the induction-head loss; resumable from
    ``work``. ``None`` if stopped."""
    target.train()
    with torch.no_grad():
        for parameter in target.parameters():
            parameter.copy_(parameter.half().float())
            parameter.requires_grad_(True)
    spec = recipe.copy_stage
    checkpoint = work / f"{recipe.stage_key('copy')}.pt"
    common = (spec.budget, streams, recipe.context, recipe.seed, recipe.weight_decay, checkpoint)
    rows = spec.induction
    if rows is None:
        markers = copy_markers(tokenizer)

        def sampler(step: int) -> torch.Tensor:
            return sample_copy_batch(streams, markers, spec, recipe.context, recipe.seed, step)

        return run_stage(
            "copy", {recipe.target.name: target}, None, *common, recipe.checkpoint_every, stop_after, sampler
        )
    if rows.attention_only:
        for name, parameter in target.named_parameters():
            parameter.requires_grad_(".self_attn." in name)
    heads = InductionLoss(target, rows.heads)
    scales = {
        f"model.layers.{layer}.self_attn.{projection}.weight": rows.head_lr_scale
        for layer, _ in rows.heads
        for projection in ("q_proj", "k_proj")
    }
    try:
        return run_stage(
            "copy", {recipe.target.name: target}, None, *common, recipe.checkpoint_every, stop_after,
            lambda step: sample_induction_batch(streams, rows, recipe.seed, step), heads, rows.head_weight,
            scales, rows.tokens_per_step,
        )  # fmt: skip
    finally:
        heads.close()


@torch.no_grad()
def held_out_copy_loss(
    model: Any, streams: dict[str, np.ndarray], span: int, windows: int
) -> dict[str, float]:
    """Mean loss (nats/token) on ``windows`` evenly spaced held-out windows of ``span`` tokens per
    domain, and on a verbatim second copy of each right after it (``bench/copy_domain.py``'s check):
    a model that copies from its context has a far lower loss on the second copy."""
    first = second = 0.0
    count = 0
    for stream in streams.values():
        batch = evaluation_windows(stream, span - 1, windows)
        doubled = torch.cat([batch, batch], dim=1)
        logits = model(input_ids=doubled[:, :-1]).logits.float()
        losses = F.cross_entropy(logits.transpose(1, 2), doubled[:, 1:], reduction="none")
        first += float(losses[:, : span - 1].mean()) * len(batch)
        second += float(losses[:, span - 1 :].mean()) * len(batch)
        count += len(batch)
    return {"first_copy": round(first / count, 4), "second_copy": round(second / count, 4), "span": span}


def export_member(
    recipe: BuildRecipe,
    model: Any,
    directory: Path,
    tokenizer: PreTrainedTokenizerFast,
    held_streams: dict[str, np.ndarray],
) -> dict[str, Any]:
    """Save one trained member as fp16 ``save_pretrained`` + tokenizer into ``directory`` (replaced),
    and measure the stored weights: held-out loss, copy loss, fp16-vs-fp32 argmax agreement."""
    model = model.eval()
    if directory.exists():
        shutil.rmtree(directory)
    half = LlamaForCausalLM(model.config)
    half.load_state_dict(model.state_dict())
    torch.nn.Module.to(half, torch.float16)  # in place (transformers wraps .to with checks)
    half.config.dtype = "float16"
    half.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    stored = LlamaForCausalLM.from_pretrained(str(directory), dtype=torch.float32).eval()
    agreement = argmax_agreement(model, stored, held_streams, recipe.context, recipe.eval_windows_per_domain)
    loss = held_out_loss(stored, held_streams, recipe.context, recipe.eval_windows_per_domain)
    copying = held_out_copy_loss(
        stored,
        held_streams,
        min(COPY_EVAL_SPAN, recipe.context // 2),
        max(1, recipe.eval_windows_per_domain // 2),
    )
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "held_out_loss": loss,
        "copy_loss": copying,
        "fp16_argmax_agreement": agreement,
    }


def _limited_texts(files: list[corpus.SourceFile], limit: int | None) -> list[str]:
    texts, chars = [], dict.fromkeys(corpus.DOMAINS, 0)
    for item in files:
        if limit is not None and chars[item.domain] >= limit:
            continue
        texts.append(item.text)
        chars[item.domain] += len(item.text)
    return texts


def _export(
    recipe: BuildRecipe,
    out: Path,
    members: dict[str, Any],
    tokenizer: PreTrainedTokenizerFast,
    held_streams: dict[str, np.ndarray],
    stages: dict[str, Any],
    prompt_counts: dict[str, int],
    files: list[corpus.SourceFile],
    started: float,
    log: Any,
) -> dict[str, Any]:
    """Save fp16 weights, then measure on held-out text what fp16 storage costs and each model's loss."""
    evaluation: dict[str, Any] = {}
    for spec in recipe.members:
        evaluation[spec.name] = export_member(
            recipe, members[spec.name], out / spec.name, tokenizer, held_streams
        )
        log(f"{spec.name}: {evaluation[spec.name]}")
    wall = time.perf_counter() - started
    manifest: dict[str, Any] = {
        "format": LADDER_FORMAT,
        "models": [spec.name for spec in recipe.members],
        "tokenizer": {
            "kind": "byte-level BPE (tokenizers)",
            "vocab_size": len(tokenizer),
            "special_tokens": [END_OF_TEXT],
            "eos_token_id": tokenizer.convert_tokens_to_ids(END_OF_TEXT),
        },
        "context_tokens": recipe.context,
        "prompts": {"file": "prompts.jsonl", "chunks_per_domain": prompt_counts},
        "training": {
            "recipe": recipe.to_dict(),
            "recipe_digest": recipe.digest(),
            "corpus_digest": corpus.corpus_digest(files),
            "corpus_files": {
                "train": sum(1 for f in files if not f.held_out),
                "held_out": sum(1 for f in files if f.held_out),
            },
            "stages": {name: _stage_summary(result) for name, result in stages.items()},
            "evaluation": evaluation,
            "wall_seconds_this_session": round(wall, 1),
            "wall_seconds_training": round(sum(r.wall_seconds for r in stages.values()), 1),
            "machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform()},
            "versions": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "tokenizers": tokenizers.__version__,
                "safetensors": safetensors.__version__,
                "numpy": np.__version__,
            },
        },
    }
    (out / "ladder.json").write_text(json.dumps(manifest, indent=1) + "\n")
    trained_minutes = manifest["training"]["wall_seconds_training"] / 60
    log(f"built {out} in {wall / 60:.1f} min this session ({trained_minutes:.1f} min of training in all)")
    return manifest


def _stage_summary(result: Any) -> dict[str, Any]:
    summary = asdict(result)
    every = max(1, result.steps // 40)
    summary["losses"] = {
        name: {
            "first": round(values[0], 4),
            "last_10_mean": round(float(np.mean(values[-10:])), 4),
            f"every_{every}_steps": [round(v, 4) for v in values[::every]],
        }
        for name, values in result.losses.items()
    }
    summary["wall_seconds"] = round(result.wall_seconds, 1)
    return summary
