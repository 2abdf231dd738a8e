"""How good is a ladder for speculation? Loss, speed and pairwise agreement on held-out text.

Usage::

    python bench/ladder_quality.py                      # the shipped default ladder
    python bench/ladder_quality.py --ladder DIR --windows 4 --threads 2

Measured per model: parameters; held-out loss (nats/token) per domain; the time of one decode step
at batch 1 on top of a ``--prompt``-token KV cache (median of ``--repeats``); the time to score 4 and
8 tokens in one pass on the same cache (``V(4)``, ``V(8)`` of the cost model, docs/design.md §1).

Measured per ordered pair ``(i, j)``, ``i`` cheaper, at every position of ``--windows`` held-out windows
of ``--context`` tokens per domain (teacher forcing on real text, temperature 1):

* greedy acceptance  = P[argmax p_i = argmax p_j]   (a greedy level accepts a draft iff they agree);
* sampling acceptance = 1 - E[TV(p_i, p_j)],  TV = 1/2 sum_v |p_i(v) - p_j(v)|  (the lossless
  accept probability of one drafted token, Leviathan et al.).

Also reported: the per-token cost ratio ``c = T_target / T_i`` and, for each drafter with the target,
the two-model speed-up the cost model predicts from these measurements,
``max_W (1 - a^(W+1)) / ((1 - a) (W T_i + V_target(W+1)) / T_target)`` over ``W = 1..8``, using the
measured ``V`` (interpolated linearly between 1, 4 and 8 tokens). The real speed-up of a chain is
measured by the backend benchmark, not here. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.hf_compat import forward_with_cache  # noqa: E402
from backend.ladder import load_ladder  # noqa: E402
from backend.prompts import PromptCorpus  # noqa: E402
from backend.zoo import default_ladder_dir  # noqa: E402


def held_out_windows(
    corpus: PromptCorpus, tokenizer: Any, domain: str, windows: int, context: int
) -> torch.Tensor:
    """``windows`` evenly spaced windows of ``context + 1`` tokens of the domain's held-out text."""
    ids: list[int] = []
    for chunk in corpus.chunks(domain):
        ids.extend(tokenizer.encode(chunk.text, add_special_tokens=False))
    if len(ids) < context + 2:
        raise ValueError(f"domain {domain!r} has only {len(ids)} held-out tokens")
    starts = np.linspace(0, len(ids) - context - 1, windows).astype(int)
    return torch.tensor([ids[s : s + context + 1] for s in starts])


@torch.inference_mode()
def pass_times(models: list[Any], prompt: torch.Tensor, repeats: int) -> list[dict[str, float]]:
    """Per model, median seconds to score 1, 4 and 8 new tokens in one pass on a cached ``prompt``.

    The models are timed in interleaved rounds (every model once per round), so a load spike from
    other processes on a shared machine hits all of them alike and the ratios stay meaningful.
    """
    positions = torch.arange(prompt.shape[1]).unsqueeze(0)
    caches = [forward_with_cache(model, prompt, None, None, positions, 1)[1] for model in models]
    samples: list[dict[int, list[float]]] = [{1: [], 4: [], 8: []} for _ in models]
    for round_index in range(repeats + 2):
        for n in (1, 4, 8):
            new = torch.full((1, n), 7)
            new_positions = torch.arange(prompt.shape[1], prompt.shape[1] + n).unsqueeze(0)
            for index, model in enumerate(models):
                started = time.perf_counter()
                forward_with_cache(model, new, caches[index], None, new_positions, n)
                if round_index >= 2:  # two warm-up rounds
                    samples[index][n].append(time.perf_counter() - started)
    return [{f"score_{n}_s": statistics.median(values) for n, values in model.items()} for model in samples]


@torch.inference_mode()
def evaluate(ladder: Any, corpus: PromptCorpus, windows: int, context: int) -> dict[str, Any]:
    """Held-out loss per model and pairwise greedy / sampling acceptance, per domain."""
    names = ladder.names
    loss: dict[str, dict[str, float]] = {name: {} for name in names}
    pairs: dict[str, dict[str, dict[str, float]]] = {}
    for domain in corpus.domains:
        batch = held_out_windows(corpus, ladder.tokenizer, domain, windows, context)
        inputs, labels = batch[:, :-1], batch[:, 1:]
        log_probs = []
        for name, model in zip(names, ladder.models):
            logits = model(input_ids=inputs).logits.float()[..., : ladder.vocab_size]
            logp = F.log_softmax(logits, dim=-1)
            loss[name][domain] = round(float(F.nll_loss(logp.flatten(0, 1), labels.flatten())), 4)
            log_probs.append(logp)
        for i in range(len(names)):
            for j in range(i + 1, len(names)):
                p, q = log_probs[i].exp(), log_probs[j].exp()
                tv = 0.5 * (p - q).abs().sum(-1)
                greedy = (log_probs[i].argmax(-1) == log_probs[j].argmax(-1)).float().mean()
                key = f"{names[i]}->{names[j]}"
                pairs.setdefault(key, {})[domain] = {
                    "greedy_acceptance": round(float(greedy), 4),
                    "sampling_acceptance": round(float(1 - tv.mean()), 4),
                }
    return {"loss": loss, "pairs": pairs}


def predicted_speedup(alpha: float, draft: dict[str, float], target: dict[str, float]) -> tuple[float, int]:
    """Best two-model speed-up over lookahead W = 1..8 from measured pass times (see module doc)."""

    def verify_time(n: int) -> float:
        return float(np.interp(n, [1, 4, 8], [target["score_1_s"], target["score_4_s"], target["score_8_s"]]))

    best, best_w = 0.0, 1
    for w in range(1, 9):
        tokens = (1 - alpha ** (w + 1)) / (1 - alpha) if alpha < 1 else w + 1.0
        latency = w * draft["score_1_s"] + verify_time(min(w + 1, 8))
        speedup = tokens * target["score_1_s"] / latency
        if speedup > best:
            best, best_w = speedup, w
    return round(best, 3), best_w


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ladder", type=Path, default=default_ladder_dir(), help="ladder directory")
    parser.add_argument("--prompts", type=Path, default=None, help="prompt corpus (default: the ladder's)")
    parser.add_argument("--windows", type=int, default=8, help="held-out windows per domain")
    parser.add_argument("--context", type=int, default=256, help="tokens per window")
    parser.add_argument("--prompt", type=int, default=128, help="cached prompt length for the timings")
    parser.add_argument("--repeats", type=int, default=30, help="timed passes per measurement (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    started = time.perf_counter()
    ladder = load_ladder(args.ladder)
    corpus = PromptCorpus.load(args.prompts or args.ladder / "prompts.jsonl")
    quality = evaluate(ladder, corpus, args.windows, args.context)
    prompt = held_out_windows(corpus, ladder.tokenizer, corpus.domains[0], 1, args.prompt)[:, : args.prompt]
    models: dict[str, Any] = {}
    timings = pass_times(ladder.models, prompt, args.repeats)
    for name, times, params in zip(ladder.names, timings, ladder.params or ()):
        models[name] = {"parameters": int(params), "held_out_loss": quality["loss"][name]}
        models[name].update({key: round(value * 1e3, 3) for key, value in times.items()})
        ms = {key: value * 1e3 for key, value in times.items()}
        print(
            f"{name:<14} {params / 1e6:7.2f}M  loss {quality['loss'][name]}  decode {ms['score_1_s']:.2f} ms"
            f"  score4 {ms['score_4_s']:.2f} ms  score8 {ms['score_8_s']:.2f} ms"
        )
    target = ladder.names[-1]
    target_ms = {k: v / 1e3 for k, v in models[target].items() if k.startswith("score_")}
    speedups = {}
    for name in ladder.names[:-1]:
        alpha = statistics.mean(
            d["sampling_acceptance"] for d in quality["pairs"][f"{name}->{target}"].values()
        )
        draft_ms = {k: v / 1e3 for k, v in models[name].items() if k.startswith("score_")}
        value, lookahead = predicted_speedup(alpha, draft_ms, target_ms)
        speedups[f"{name}->{target}"] = {
            "alpha_sampling": round(alpha, 4),
            "speedup": value,
            "lookahead": lookahead,
        }
    for key, domains in quality["pairs"].items():
        shown = "  ".join(
            f"{d}: greedy {v['greedy_acceptance']:.3f} sampling {v['sampling_acceptance']:.3f}"
            for d, v in domains.items()
        )
        print(f"{key:<28} {shown}")
    neighbours = [f"{a}->{b}" for a, b in zip(ladder.names, ladder.names[1:])]
    worst_neighbour = min(v["sampling_acceptance"] for k in neighbours for v in quality["pairs"][k].values())
    cost_ratio = models[target]["score_1_s"] / models[ladder.names[0]]["score_1_s"]
    result = {
        "ladder": str(args.ladder),
        "threads": args.threads,
        "windows_per_domain": args.windows,
        "context": args.context,
        "models": models,
        "pairs": quality["pairs"],
        "predicted_two_model_speedup": speedups,
        "goals": {
            "neighbour sampling acceptance (worst pair)": {
                "value": round(worst_neighbour, 4), "target": ">= 0.6", "met": worst_neighbour >= 0.6,
            },
            "smallest drafter to target cost ratio": {
                "value": round(cost_ratio, 2), "target": ">= 10", "met": cost_ratio >= 10,
            },
        },  # fmt: skip
        "param_span": round(models[target]["parameters"] / models[ladder.names[0]]["parameters"], 1),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
