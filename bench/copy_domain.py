"""Does copying pay on the ``edit`` prompt domain? The n-gram drafter walked over real target output.

Usage::

    OMP_NUM_THREADS=1 python bench/copy_domain.py                # shipped ladder, 24 prompts/domain
    python bench/copy_domain.py --ladder DIR --prompts 8 --prompt-tokens 128 --new-tokens 64

For ``--prompts`` prompts per domain (the profiler's prompts: ``prompt_set`` from request id
``PROFILE_PROMPT_IDS``, ``--prompt-tokens`` long), the ladder's target decodes ``--new-tokens`` tokens
greedily (``backend.profiler.continue_prompt``). That output is then walked the way rounds of
``ngram > target`` run in greedy mode: at round start ``s`` the drafter proposes
``NgramDrafter().propose(prompt + output[:s], --gamma)``, the target accepts the longest prefix of
the proposal equal to ``output[s:]`` and adds one token of its own, so ``s += accepted + 1``.

Per domain: the fraction of rounds with a proposal, the mean accepted tokens per round and the
tokens per round (``new_tokens / rounds``; 1 means the drafter never helps, ``gamma + 1`` is the
most). Also measured, to explain the result: the target's mean loss (nats/token) on a verbatim
second copy of a held-out window versus on the first copy (a model that copies in context has a
much lower loss on the second copy). The last line printed is one JSON object ``{"goals": ...}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.ladder import load_ladder  # noqa: E402
from backend.ngram import NgramDrafter  # noqa: E402
from backend.profiler import continue_prompt  # noqa: E402
from backend.replay import PROFILE_PROMPT_IDS, prompt_set, prompt_source_for  # noqa: E402
from backend.zoo import default_ladder_dir  # noqa: E402

DOMAINS = ("code", "prose", "edit")
GOAL_RATIO = 2.0  # edit accepted per round >= 2x that of code and of prose


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ladder", type=Path, default=default_ladder_dir())
    parser.add_argument("--prompts", type=int, default=24, help="prompts per domain (default 24)")
    parser.add_argument("--prompt-tokens", type=int, default=128, help="prompt length (default 128)")
    parser.add_argument("--new-tokens", type=int, default=64, help="greedy tokens per prompt (default 64)")
    parser.add_argument("--gamma", type=int, default=4, help="n-gram proposal length per round (default 4)")
    parser.add_argument("--copy-windows", type=int, default=8, help="windows of the copy-loss check")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def walk_rounds(
    prompt: Sequence[int], output: Sequence[int], drafter: NgramDrafter, gamma: int
) -> tuple[int, int, int]:
    """(rounds, rounds with a proposal, accepted tokens) of ``ngram > target`` over ``output``."""
    context = list(prompt) + list(output)
    start, rounds, proposed, accepted = 0, 0, 0, 0
    while start < len(output):
        proposal = drafter.propose(context[: len(prompt) + start], gamma)
        agreed = 0
        while (
            agreed < len(proposal)
            and start + agreed < len(output)
            and proposal[agreed] == output[start + agreed]
        ):
            agreed += 1
        rounds += 1
        proposed += bool(proposal)
        accepted += agreed
        start += agreed + 1
    return rounds, proposed, accepted


def measure_domain(
    target: Any, prompts: Sequence[Sequence[int]], new_tokens: int, gamma: int
) -> dict[str, float | int]:
    drafter = NgramDrafter()
    rounds = proposed = accepted = 0
    generator = torch.Generator().manual_seed(0)
    for prompt in prompts:
        with torch.no_grad():
            output = continue_prompt(target, prompt, new_tokens, False, generator)
        r, p, a = walk_rounds(prompt, output, drafter, gamma)
        rounds, proposed, accepted = rounds + r, proposed + p, accepted + a
    return {
        "prompts": len(prompts),
        "rounds": rounds,
        "proposal_fraction": round(proposed / rounds, 4),
        "accepted_per_round": round(accepted / rounds, 4),
        "tokens_per_round": round(len(prompts) * new_tokens / rounds, 4),
    }


def copy_loss(target: Any, windows: Sequence[Sequence[int]]) -> dict[str, float]:
    """Mean loss of the target on the first and on a verbatim second copy of each window."""
    first = second = 0.0
    for window in windows:
        ids = torch.tensor([list(window) * 2])
        with torch.no_grad():
            logits = target(ids).logits[0, :-1].float()
        losses = F.cross_entropy(logits, ids[0, 1:], reduction="none")
        n = len(window)
        first += float(losses[: n - 1].mean())
        second += float(losses[n - 1 :].mean())
    return {"first_copy": round(first / len(windows), 3), "second_copy": round(second / len(windows), 3)}


def goal(value: float, target: float) -> dict[str, Any]:
    return {"value": round(value, 3), "target": f">= {target}", "met": value >= target}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    ladder = load_ladder(args.ladder)
    target = ladder.models[-1].eval()
    source = prompt_source_for(ladder, args.seed, args.ladder)
    available = getattr(source, "domains", ())
    missing = [d for d in DOMAINS if d not in available]
    if missing:
        raise SystemExit(
            f"{args.ladder}: the prompt corpus has no {missing} prompts (domains: {list(available)})"
        )
    prompts = prompt_set(source, args.prompts, args.prompt_tokens, DOMAINS, first_id=PROFILE_PROMPT_IDS)
    rows = {
        domain: measure_domain(target, prompts[domain], args.new_tokens, args.gamma) for domain in DOMAINS
    }
    windows = [p[:100] for domain in ("code", "prose") for p in prompts[domain][: args.copy_windows // 2]]
    copying = copy_loss(target, windows)

    print(
        f"{'domain':<8} {'prompts':>7} {'rounds':>7} {'proposal':>9} "
        f"{'accepted/round':>15} {'tokens/round':>13}"
    )
    for domain, row in rows.items():
        print(
            f"{domain:<8} {row['prompts']:>7} {row['rounds']:>7} {row['proposal_fraction']:>9.3f} "
            f"{row['accepted_per_round']:>15.3f} {row['tokens_per_round']:>13.3f}"
        )
    print(
        f"target loss on held-out windows: first copy {copying['first_copy']:.3f}, verbatim second copy "
        f"{copying['second_copy']:.3f} nats/token"
    )
    edit = rows["edit"]["accepted_per_round"]
    goals = {
        f"edit accepted per round / {domain} accepted per round": goal(
            edit / max(rows[domain]["accepted_per_round"], 1e-9), GOAL_RATIO
        )
        for domain in ("code", "prose")
    }
    result = {
        "goals": goals,
        "domains": rows,
        "copy_loss": copying,
        "settings": {
            "ladder": str(args.ladder),
            "target": ladder.names[-1],
            "prompts": args.prompts,
            "prompt_tokens": args.prompt_tokens,
            "new_tokens": args.new_tokens,
            "gamma": args.gamma,
            "seed": args.seed,
            "threads": args.threads,
        },
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
