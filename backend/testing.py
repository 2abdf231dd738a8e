"""Tiny seeded random Llama ladders for exactness tests (no downloads, milliseconds per pass).

The target is a random Llama; each lower level is the target with Gaussian noise added to every
weight, larger for cheaper levels, so drafts are accepted often but not always (both the accept
and the reject paths of every level get exercised).  ``init_scale`` sharpens the random model's
distributions (the default Hugging Face init gives near-uniform ones over a tiny vocabulary).

``tiny_ladder`` builds the models in memory (token-id-only mode, no tokenizer);
``save_tiny_ladder`` writes a loadable ladder directory with a shared word-level tokenizer,
``ladder.json`` and one ``save_pretrained`` directory per model.

``tiny_ladder``'s default noise makes drafts accepted with probability ~0.1-0.5 only, so rounds
where every level accepts everything (bonus token, then catch-up of the bonus by the lower
models) are rare there.  ``agreeing_ladder`` is the same construction with ~12x smaller noise:
drafters agree with the target ~80-95% of the time, so full-accept rounds are common and
rejections still happen.  ``reference_greedy`` is the independent reference of the exactness
tests: plain argmax decoding with a full forward pass over the whole prefix per token (no KV
cache, no executor).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from backend.ladder import LADDER_FILE, Ladder

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")


def tiny_config(vocab_size: int = 64, hidden: int = 32, layers: int = 2, heads: int = 4) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=1024,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        tie_word_embeddings=False,
    )


def tiny_models(
    levels: int = 3,
    seed: int = 0,
    vocab_size: int = 64,
    noise: Sequence[float] | None = None,
    init_scale: float = 15.0,
    dtype: torch.dtype = torch.float64,
) -> list[LlamaForCausalLM]:
    """``levels`` seeded random models, cheapest first; level k = target + noise[k] * N(0, std)."""
    if noise is None:
        noise = [0.1 * (levels - 1 - k) / max(1, levels - 1) for k in range(levels)]
    if len(noise) != levels:
        raise ValueError(f"noise has {len(noise)} entries for {levels} levels")
    generator = torch.Generator().manual_seed(seed)
    config = tiny_config(vocab_size)
    target: Any = LlamaForCausalLM(config)
    target.to(dtype)
    with torch.no_grad():
        for param in target.parameters():
            if param.dim() > 1:
                param.copy_(torch.randn(param.shape, generator=generator, dtype=dtype) * init_scale * 0.02)
    out = []
    for level in range(levels):
        model: Any = LlamaForCausalLM(config)
        model.to(dtype)
        model.load_state_dict(target.state_dict())
        with torch.no_grad():
            for param in model.parameters():
                if param.dim() > 1 and noise[level] > 0:
                    scale = noise[level] * float(param.std())
                    param.add_(torch.randn(param.shape, generator=generator, dtype=dtype) * scale)
        model.eval()
        out.append(model)
    return out


def tiny_ladder(levels: int = 3, seed: int = 0, **kwargs: object) -> Ladder:
    """An in-memory token-id-only ladder of ``levels`` tiny models (float64 unless told)."""
    models_ = tiny_models(levels, seed, **kwargs)  # type: ignore[arg-type]
    return Ladder(models=list(models_), names=tuple(f"tiny{k}" for k in range(levels)), eos_token_id=None)


AGREEING_NOISE = 0.008
"""Relative weight noise of an ``agreeing_ladder``'s cheapest drafter (others: linearly less)."""


def agreeing_ladder(
    levels: int = 3,
    seed: int = 0,
    vocab_size: int = 64,
    noise: float = AGREEING_NOISE,
    dtype: torch.dtype = torch.float64,
) -> Ladder:
    """A tiny ladder whose drafters agree with the target most of the time (module doc).

    Level ``k`` is the target plus ``noise * (levels - 1 - k) / (levels - 1)`` relative Gaussian
    weight noise; the acceptance this gives is asserted by the tests that rely on it.
    """
    scales = [noise * (levels - 1 - k) / max(1, levels - 1) for k in range(levels)]
    return tiny_ladder(levels, seed, vocab_size=vocab_size, noise=scales, dtype=dtype)


def reference_greedy(model: torch.nn.Module, prompt: Sequence[int], new_tokens: int) -> list[int]:
    """``new_tokens`` argmax tokens after ``prompt``, each from a fresh full-prefix forward pass."""
    tokens = [int(t) for t in prompt]
    device = next(model.parameters()).device
    with torch.inference_mode():
        for _ in range(new_tokens):
            logits = model(input_ids=torch.tensor([tokens], device=device)).logits[0, -1]
            tokens.append(int(torch.argmax(logits)))
    return tokens[len(prompt) :]


def tiny_tokenizer(vocab_size: int = 64) -> PreTrainedTokenizerFast:
    """A word-level tokenizer: the special tokens, then words ``w4 .. w{vocab_size-1}``."""
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    vocab.update({f"w{index}": index for index in range(len(SPECIAL_TOKENS), vocab_size)})
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def save_tiny_ladder(root: Path, levels: int = 3, seed: int = 0, vocab_size: int = 64) -> Path:
    """Write a loadable ladder directory (``ladder.json`` + one HF directory per model)."""
    root = Path(root)
    names = [f"tiny{k}" for k in range(levels)]
    tokenizer = tiny_tokenizer(vocab_size)
    for name, model in zip(names, tiny_models(levels, seed, vocab_size, dtype=torch.float32)):
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    (root / LADDER_FILE).write_text(json.dumps({"models": names, "note": "seeded random test ladder"}))
    return root
