"""``specrouter search``: tune a policy's knobs with Optuna on a set of scenarios.

Each trial runs the policy with one setting of its knobs on every ``--scenario`` once
per ``--seeds`` entry in the simulator and scores it by the geometric mean of ``--metric``
over those runs (lower is better).  Trials run on a local process pool (default) or on Ray
(``--pool ray``, optional extra ``pip install -e '.[ray]'``).  The same ``--seed`` gives
the same trials on both pools.  The study is kept in ``--storage`` (default
``OUT/study.journal``): run the same command again after an interruption and it resumes,
keeping every finished trial; raise ``--trials`` to continue a finished search.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from specrouter.commands.options import add_command, add_options

EXAMPLES = """examples:
  specrouter search --policy specrouter --scenario stationary --scenario domain-shift --trials 40
  specrouter search --policy specrouter --scenario slowdown --knob time_rate=0.005:0.3:log --trials 20
  specrouter search --policy specrouter --scenario stationary --pool ray --address auto
  specrouter search --policy dynamic-lookahead --world plan --scenario plan-stationary --trials 8
"""

EVALUATORS = {
    "sim": "specrouter.experiments.objectives:scenario_metric",
    "plan": "specrouter.experiments.objectives:plan_metric",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    summary = "tune a policy's knobs with Optuna on a scenario set (local pool or Ray)"
    parser = add_command(subparsers, "search", summary, __doc__, EXAMPLES)
    add_options(
        parser,
        policy={"required": True, "default": None, "help": "policy to tune, e.g. specrouter, bandit"},
        seed={"help": "seed of the sampler (default 0)"},
        requests={"help": "requests per scenario run (default: the scenario's)"},
        out={"default": Path("runs/search")},
    )  # fmt: skip
    parser.add_argument(
        "--scenario",
        action="append",
        default=None,
        help="scenario to score on (repeat for several); default: every shipped scenario",
    )
    parser.add_argument(
        "--knob",
        action="append",
        default=[],
        metavar="NAME=LOW:HIGH[:log][:int]",
        help="search this constructor argument (repeatable); default: the policy's declared knobs",
    )
    parser.add_argument("--trials", type=int, default=20, help="trials in total, finished ones included")
    parser.add_argument(
        "--seeds", default="0", help="comma-separated simulation seeds per scenario (default 0)"
    )
    parser.add_argument("--metric", default="tpot_mean", help="summary key to minimise (default tpot_mean)")
    parser.add_argument(
        "--world", choices=("sim", "plan"), default="sim", help="sim: the simulator (default)"
    )
    # --executor: the flag's old name, kept so existing scripts still run
    parser.add_argument("--pool", "--executor", dest="pool", choices=("local", "ray"), default="local",
                        help="where trials run: a local process pool (default) or Ray")  # fmt: skip
    parser.add_argument("--address", default=None, help="Ray cluster address (with --pool ray)")
    parser.add_argument("--workers", type=int, default=None, help="parallel trials (default: CPU count)")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="trials asked per batch (default: workers)"
    )
    parser.add_argument("--storage", type=Path, default=None, help="study file (default OUT/study.journal)")
    parser.add_argument("--study-name", default="specrouter-search", help="study name inside the storage")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from policies.registry import check_search_range, check_spec
    from specrouter.cli import InputError
    from specrouter.commands.options import check_flags
    from specrouter.experiments.pools import make_pool
    from specrouter.experiments.search import (
        SearchConfig,
        default_knobs,
        format_trials,
        parse_knob,
        run_search,
    )

    check_flags(args, "--trials", "--requests", "--workers", "--batch-size")
    check_spec(args.policy)
    try:
        knobs = {k.name: k for k in default_knobs(args.policy)}
        knobs.update({k.name: k for k in map(parse_knob, args.knob)})
        seeds = tuple(int(s) for s in str(args.seeds).split(","))
        scenarios = tuple(args.scenario or _all_scenarios(args.world))
        _check_scenarios(args.world, scenarios)
    except ValueError as error:
        raise InputError(str(error)) from None
    # Every knob, the user's and the defaults, is checked against the policy before trial 1:
    # a knob the policy lacks would otherwise fail every trial, after all of them ran.
    for knob in knobs.values():
        check_search_range(args.policy, knob.name, knob.low, knob.high, knob.integer)
    if not knobs:
        print(
            f"specrouter search: policy {args.policy!r} declares no knobs; name some with "
            "--knob NAME=LOW:HIGH (constructor arguments)",
            file=sys.stderr,
        )
        return 2
    options: dict[str, object] = {"metric": args.metric}
    if args.requests is not None:
        options["requests"] = args.requests
    pool = make_pool(args.pool, args.workers, args.address)
    config = SearchConfig(
        policy=args.policy,
        knobs=tuple(knobs.values()),
        scenarios=scenarios,
        trials=args.trials,
        seed=args.seed,
        seeds=seeds,
        batch_size=args.batch_size or pool.workers,
        evaluator=EVALUATORS[args.world],
        options=options,
        study_name=args.study_name,
    )
    storage = args.storage or args.out / "study.journal"
    bar = tqdm(total=args.trials, desc=f"search {args.policy}", unit="trial")

    def progress(done: int, total: int, best: float | None) -> None:
        bar.n = done
        bar.set_postfix(best=f"{best:.5g}" if best is not None else "-")
        bar.refresh()

    try:
        result = run_search(config, pool, storage, progress)
    except (ValueError, RuntimeError) as error:
        print(f"specrouter search: {error}", file=sys.stderr)
        return 2
    finally:
        bar.close()
        pool.close()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "search.json").write_text(json.dumps(result.to_json(), indent=2, default=str) + "\n")
    if result.resumed_trials:
        print(f"resumed {result.resumed_trials} interrupted trial(s) from {storage}")
    print(format_trials(result, config.knobs))
    unit = args.metric if args.world == "sim" else "ms per token"
    print(
        f"best {unit} (geometric mean over {len(scenarios)} scenario(s) x {len(seeds)} seed(s)): "
        f"{result.best_value:.5g} with {json.dumps(result.best_params)}"
    )
    print(f"wrote {args.out / 'search.json'}; study kept in {storage} (rerun to resume or extend)")
    return 0


def _all_scenarios(world: str) -> list[str]:
    if world == "plan":
        from specrouter.experiments.objectives import PLAN_ALPHA

        return list(PLAN_ALPHA)
    from specrouter.scenarios import scenario_names

    return scenario_names()


def _check_scenarios(world: str, scenarios: tuple[str, ...]) -> None:
    known = _all_scenarios(world)
    unknown = [s for s in scenarios if s not in known]
    if unknown:
        raise ValueError(
            f"unknown scenario(s) {', '.join(unknown)} for --world {world}: choose from {', '.join(known)}"
        )
