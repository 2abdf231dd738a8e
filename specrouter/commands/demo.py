"""``specrouter demo``: the README's main job on the embedded defaults.

For now a small Monte Carlo of the round plan (i.i.d. acceptance, fixed pass times, one
request at a time) that compares the baseline policies and prints, next to each measured
time per token, the cost model's prediction.  Inputs are the assumptions listed in
``DEFAULTS``; the figures are measured by running the plan.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from policies import DynamicLookahead, LadderInfo, Policy, RouteView, StaticChain, TargetOnly
from policies.contract import LevelFeedback, RoundFeedback
from policies.cost_model import alpha_from_matrix, t_eff
from policies.plan import Verify, drive

DEFAULTS: dict[str, Any] = {
    # Llama-style ladder; per-pass times in ms at batch 1 (a verify pass costs a bit more per position).
    "names": ("68M", "1B", "8B", "70B"),
    "decode_ms": (0.35, 1.1, 5.5, 42.0),
    "per_extra_position_ms": (0.005, 0.02, 0.08, 0.6),
    # acceptance of lower -> upper model
    "alpha": {(0, 1): 0.75, (0, 2): 0.65, (0, 3): 0.6, (1, 2): 0.8, (1, 3): 0.72, (2, 3): 0.85},
    "requests": 40,
    "output_tokens": 128,
    "seed": 0,
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="compare routing policies on the embedded defaults",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  specrouter demo --requests 20 --seed 1",
    )
    parser.add_argument("--requests", type=int, default=DEFAULTS["requests"], help="requests to decode")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="random seed")
    parser.set_defaults(func=run)


def pass_time_ms(model: int, tokens: int) -> float:
    return DEFAULTS["decode_ms"][model] + DEFAULTS["per_extra_position_ms"][model] * (tokens - 1)


def alpha_matrix() -> list[list[float]]:
    size = len(DEFAULTS["names"])
    matrix = [[1.0] * size for _ in range(size)]
    for (lower, upper), value in DEFAULTS["alpha"].items():
        matrix[lower][upper] = value
    return matrix


def simulate(policy: Policy, requests: int, output_tokens: int, seed: int) -> float:
    """Decode ``requests`` requests one after another; return ms per output token."""
    rng = np.random.default_rng(seed)
    alpha = alpha_matrix()
    ladder = LadderInfo(tuple(DEFAULTS["names"]))
    idle = (0,) * ladder.size
    clock = 0.0
    for rid in range(requests):
        generated = 0
        while generated < output_tokens:
            view = RouteView(rid, 64, generated, output_tokens, None, clock, ladder, idle, idle)
            route = policy.route(view)
            started = clock

            def answer(call: Any, route: Any = route) -> int | None:
                if not isinstance(call, Verify):
                    return None
                a = alpha[route.chain[call.level - 1]][call.model] if call.level else 1.0
                accepted = 0
                while accepted < call.candidates and rng.random() < a:
                    accepted += 1
                return accepted

            calls, counts = drive(route, output_tokens - generated, answer)
            for call in calls:
                clock += pass_time_ms(call.model, call.candidates + 1 if isinstance(call, Verify) else 1)
            generated += counts.emitted[-1]
            levels = tuple(
                LevelFeedback(m, counts.proposed[j], counts.accepted[j], counts.emitted[j], ())
                for j, m in enumerate(route.chain)
            )
            policy.observe(
                RoundFeedback(rid, None, route, started, clock, levels, (), generated >= output_tokens)
            )
    return clock / (requests * output_tokens)


def run(args: argparse.Namespace) -> int:
    target = len(DEFAULTS["names"]) - 1
    policies: list[Policy] = [
        TargetOnly(),
        StaticChain((2, target), (4,)),
        StaticChain((0, target), (4,)),
        StaticChain((0, 2, target), (3, 2)),
        StaticChain((0, 1, 2, target), (2, 1, 1)),
        DynamicLookahead(drafter=2),
    ]
    alpha = alpha_from_matrix(alpha_matrix())
    started = time.perf_counter()
    baseline = None
    print(f"{'policy':<32} {'ms/token':>9} {'predicted':>9} {'speed-up':>9}")
    for policy in policies:
        measured = simulate(policy, args.requests, DEFAULTS["output_tokens"], args.seed)
        baseline = baseline or measured
        route = policy.route(RouteView(0, 0, 0, 1, None, 0.0, LadderInfo(tuple(DEFAULTS["names"])), (), ()))
        predicted = (
            "" if isinstance(policy, DynamicLookahead) else f"{t_eff(route, alpha, pass_time_ms):9.2f}"
        )
        print(f"{policy.name:<32} {measured:9.2f} {predicted:>9} {baseline / measured:8.2f}x")
    print(
        f"({args.requests} requests x {DEFAULTS['output_tokens']} tokens per policy, seed {args.seed}, "
        f"{time.perf_counter() - started:.1f}s)"
    )
    return 0
