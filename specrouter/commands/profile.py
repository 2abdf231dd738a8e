"""``specrouter profile``: measure a real ladder and write its world profile.

Times every model's forward pass over a grid of (tokens in the pass, batch size, context
length) -- the median of repeats after warm-up -- and measures, for every ordered pair of
models and every prompt domain, greedy acceptance, sampling acceptance (1 - mean TV), TV
samples and per-draft-position acceptance.  The JSON written is the versioned world profile
of ``traces/world_profile.py`` that ``specrouter simulate`` loads (table latency model,
empirical acceptance).  ``--quick`` measures a small grid in seconds (tests, demos).

``--ngram MIN:MAX`` profiles the ladder with a model-free n-gram prompt-lookup drafter as
member 0 (the networks move up by one): its lookup-pass time by rows, the pmf of the number of
tokens it proposes per domain and limit, and the acceptance of its proposals by every network,
from lookup rounds walked on the same prompts and target continuations.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from specrouter.commands.options import add_command, add_options


def register(subparsers: argparse._SubParsersAction) -> None:
    summary = "measure a real model ladder and write a world profile for the simulator"
    example = "example:\n  specrouter profile --ladder backend/zoo/default --out profile.json --quick"
    parser = add_command(subparsers, "profile", summary, __doc__, example)
    add_options(
        parser, "device", "dtype", "lean", "ngram",
        ladder={"required": True, "help": "ladder directory (with ladder.json)"},
        out={"required": True, "type": str, "help": "world profile JSON to write"},
        seed={"help": "random seed (prompts, sampled continuations; default 0)"},
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="small grid and few prompts (seconds)")
    parser.add_argument("--prompts", type=int, default=None, help="prompts per domain (default 8; quick 2)")
    parser.add_argument(
        "--prompt-tokens", type=int, default=None, help="prompt length in tokens (default 128; quick 32)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from backend.ladder import load_ladder
    from backend.profiler import ProfileSettings, profile_ladder
    from backend.replay import PROFILE_PROMPT_IDS, prompt_set, prompt_source_for
    from specrouter.cli import InputError, require_positive
    from specrouter.commands.options import lookup_from_args
    from traces.world_profile import save_world_profile

    require_positive(args.prompts, "--prompts")
    require_positive(args.prompt_tokens, "--prompt-tokens")
    lookup = lookup_from_args(args)
    out = Path(args.out)
    if out.is_dir() or not out.parent.is_dir():
        raise InputError(f"--out {out}: expected a file in an existing directory, e.g. profile.json")
    settings = ProfileSettings.quick() if args.quick else ProfileSettings()
    settings = replace(settings, seed=args.seed)
    if args.prompts is not None:
        settings = replace(settings, prompts_per_domain=args.prompts)
    prompt_tokens = args.prompt_tokens or (32 if args.quick else 128)
    started = time.perf_counter()
    ladder = load_ladder(args.ladder, device=args.device, dtype=args.dtype).with_lookup(lookup)
    source = prompt_source_for(ladder, args.seed, args.ladder)
    if source.name != "corpus":
        print("note: no prompt corpus for this ladder; profiling on random token prompts", file=sys.stderr)
    prompts = prompt_set(source, settings.prompts_per_domain, prompt_tokens, first_id=PROFILE_PROMPT_IDS)
    meta = {
        "ladder": str(Path(args.ladder).resolve()),
        "prompt_source": source.name,
        "prompt_tokens": prompt_tokens,
    }
    profile = profile_ladder(ladder, prompts, settings, meta, lean=args.lean)
    save_world_profile(profile, args.out)
    print(f"{'model':<16} {'params':>10} {'1 tok b1 ms':>12} {'max tok b1 ms':>14}")
    for model in profile.models:
        table = model.pass_time
        digits = 4 if model.model_free else 2  # a lookup pass takes microseconds
        print(
            f"{model.name:<16} {model.params:>10.3g} {table.seconds[0][0] * 1e3:>12.{digits}f} "
            f"{table.seconds[0][-1] * 1e3:>14.{digits}f}"
        )
    for proposal in profile.proposals:
        if proposal.domain is None and proposal.mode == "greedy":
            pmf = proposal.by_limit[-1]
            mean = sum(n * p for n, p in enumerate(pmf))
            print(
                f"lookup proposes {mean:.2f} of {len(pmf) - 1} on average, nothing "
                f"{pmf[0]:.0%} of lookups ({proposal.rounds} lookups)"
            )
    for pair in profile.acceptance:
        if pair.domain is None:
            print(
                f"pair {pair.lower}->{pair.upper} {pair.mode:<8} alpha {pair.alpha:.3f} "
                f"({pair.samples} positions)"
            )
    print(f"wrote {args.out} ({time.perf_counter() - started:.1f}s, {profile.device})")
    return 0
