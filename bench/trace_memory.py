"""Benchmark: streaming a multi-million-row trace keeps peak memory bounded (goal < 200 MB).

Writes a seeded synthetic trace of ``--rows`` requests (default 2,000,000) in ``--format``
(default ``azure``, the format of the largest public traces) to a temporary file, then, in a
fresh Python process so that nothing from the generation counts, streams it through
``traces.loaders.load_trace`` (both passes: validation, then the requests; ``--single-pass``
for one) and sums the
lengths.  Prints progress on stderr and, last, one JSON line:

    {"rows": ..., "format": ..., "peak_rss_mb": ..., "goal_mb": 200, "ok": ...,
     "load_seconds": ..., "rows_per_second": ..., "generate_seconds": ...}

``peak_rss_mb`` is the loading process's ``ru_maxrss`` (interpreter and numpy included).
Run: ``python3 bench/trace_memory.py`` (about a minute on a 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_MB = 200.0

LOAD_SCRIPT = """
import json, resource, sys, time
from traces.loaders import load_trace
started = time.perf_counter()
reader = load_trace(sys.argv[1], sys.argv[2], validate_first=sys.argv[3] == "validate")
count = prompt = output = 0
for request in reader:
    count += 1
    prompt += request.prompt_tokens
    output += request.output_tokens
elapsed = time.perf_counter() - started
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = {"count": count, "prompt": prompt, "output": output, "seconds": elapsed, "peak_kb": peak_kb}
print(json.dumps(result))
"""


def generate(path: Path, rows: int, fmt: str, seed: int) -> float:
    from tqdm import tqdm

    from traces.loaders import write_trace
    from traces.synthetic import Workload, lognormal, poisson

    started = time.perf_counter()
    workload = Workload(poisson(50.0), lognormal(1000, 1.0), lognormal(200, 1.0), count=rows, seed=seed)
    write_trace(tqdm(workload, total=rows, unit="req", desc="writing trace", file=sys.stderr), path, fmt)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument(
        "--format", default="azure", choices=["azure", "burstgpt", "mooncake", "jsonl", "csv"]
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--single-pass", action="store_true", help="load with validate_first=False")
    args = parser.parse_args()
    mode = "single" if args.single_pass else "validate"
    suffix = ".jsonl" if args.format in ("mooncake", "jsonl") else ".csv"
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"trace{suffix}"
        generate_seconds = generate(path, args.rows, args.format, args.seed)
        size_mb = path.stat().st_size / 2**20
        print(f"streaming {path.name} ({size_mb:.0f} MB) in a fresh process...", file=sys.stderr)
        result = subprocess.run(
            [sys.executable, "-c", LOAD_SCRIPT, str(path), args.format, mode],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        )
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    if loaded["count"] != args.rows:
        print(f"error: streamed {loaded['count']} requests, wrote {args.rows}", file=sys.stderr)
        return 1
    peak_mb = loaded["peak_kb"] / 1024
    print(
        json.dumps(
            {
                "goals": {
                    f"peak RSS streaming {args.rows:,} rows (MB)": {
                        "value": round(peak_mb, 1), "target": f"< {GOAL_MB}", "met": peak_mb < GOAL_MB,
                    }
                },  # fmt: skip
                "rows": args.rows,
                "format": args.format,
                "passes": 1 if args.single_pass else 2,
                "file_mb": round(size_mb, 1),
                "peak_rss_mb": round(peak_mb, 1),
                "goal_mb": GOAL_MB,
                "ok": peak_mb < GOAL_MB,
                "load_seconds": round(loaded["seconds"], 2),
                "rows_per_second": round(args.rows / loaded["seconds"]),
                "generate_seconds": round(generate_seconds, 2),
            }
        )
    )
    return 0 if peak_mb < GOAL_MB else 1


if __name__ == "__main__":
    sys.exit(main())
