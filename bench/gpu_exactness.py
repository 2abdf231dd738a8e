"""Exactness on an accelerator: the backend's greedy chains against a plain argmax loop, KV vs prefill.

    python3 bench/gpu_exactness.py --device cuda     # the embedded ladder on the GPU

For each chain (two- and three-level, both forward paths: Hugging Face and lean) the engine
replays a batch of prompts greedily; every output must equal the target's greedy decoding by
full recomputation (no cache at all, one prompt at a time).  Then one sequence's KV state after
those rounds (extends, rollbacks, catch-ups) must give the same next-token logits as a fresh
prefill of its tokens.  GPU kernels are not bit-reproducible across batch shapes, so a greedy
mismatch at a near-tie is possible in principle: mismatches are counted and reported, and the
goal is zero.  The last line is one JSON object with the ``goals`` map.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from backend.engine import EngineConfig, replay
from backend.kv_state import ModelKV, ScoreRequest
from backend.ladder import load_ladder
from backend.replay import FixedPrompts, RandomTokenPrompts
from backend.zoo import default_ladder_dir
from policies.baselines import StaticChain
from traces.request import Request

CHAINS = (((0, 2), (4,)), ((0, 1, 2), (4, 1)), ((1, 2), (3,)))


def argmax_loop(
    model: torch.nn.Module, prompt: list[int], new_tokens: int, device: torch.device
) -> list[int]:
    ids = list(prompt)
    with torch.inference_mode():
        for _ in range(new_tokens):
            logits = model(torch.tensor([ids], device=device)).logits[0, -1]
            ids.append(int(torch.argmax(logits)))
    return ids[len(prompt) :]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=24)
    args = parser.parse_args()
    started = time.perf_counter()
    ladder = load_ladder(default_ladder_dir(), device=args.device)
    source = RandomTokenPrompts(ladder.vocab_size, seed=11)
    prompts = [source.prompt_ids(Request(i, 0.0, 20 + 3 * i, 1, None)) for i in range(args.prompts)]
    reference = [argmax_loop(ladder.models[-1], p, args.new_tokens, ladder.device) for p in prompts]
    requests = [Request(i, 0.0, len(p), args.new_tokens, None) for i, p in enumerate(prompts)]
    mismatches: dict[str, int] = {}
    for lean in (False, True):
        for chain, lookaheads in CHAINS:
            policy = StaticChain(chain, lookaheads)
            config = EngineConfig(max_batch=len(prompts), keep_outputs=True, progress=False)
            result = replay(ladder, policy, requests, FixedPrompts(prompts), config, lean=lean)
            name = f"{'lean' if lean else 'hf'} {policy.name}"
            mismatches[name] = sum(result.outputs[i] != reference[i] for i in range(len(prompts)))
    # KV after rounds == fresh prefill (HF path: the cache a long run leaves behind)
    from backend.executor import MultiLevelExecutor
    from policies.contract import Route

    executor = MultiLevelExecutor(ladder, eos_token_id=-1)
    executor.add(0, prompts[0])
    for route in (Route((0, 1, 2), (4, 1), 2), Route((2,), (), 2), Route((0, 2), (3,), 2)) * 3:
        executor.step({0: (route, 6)})
    tokens = executor.tokens(0)
    kv_error = 0.0
    for member, state in enumerate(executor.states):
        if state is None:  # the model-free lookup drafter keeps no KV
            continue
        cached = state.score([ScoreRequest(0, tokens, 1)])[0].logits
        network = ladder.network(member)
        fresh = ModelKV(network, ladder.vocab_size).score([ScoreRequest(1, tokens, 1)])[0].logits
        kv_error = max(kv_error, float((cached - fresh).abs().max()))
    goals = {
        f"greedy equals argmax loop: {name}": {"value": count, "target": "== 0", "met": count == 0}
        for name, count in mismatches.items()
    }
    goals["KV after rounds vs fresh prefill (max |logit diff|)"] = {
        "value": kv_error, "target": "<= 1e-3", "met": kv_error <= 1e-3,
    }  # fmt: skip
    print(
        json.dumps(
            {"goals": goals, "device": str(ladder.device), "wall_s": round(time.perf_counter() - started, 1)}
        )
    )


if __name__ == "__main__":
    main()
