#!/usr/bin/env bash
# GPU validation run, in one go (<= 8 minutes on one GPU):
#   1. the backend exactness checks on CUDA (greedy chains == argmax loop, KV == fresh prefill)
#   2. a quick profile of the embedded ladder on CUDA
#   3. bench/backend_speed.py --quick on CUDA
#   4. one fidelity cell (bench/fidelity.py --quick) on CUDA
# and one JSON summary (last line, and $OUT/gpu_check.json; copy it under docs/gpu/ as the record).
# Without CUDA it says so and exits 0.
#   bash bench/gpu_check.sh                        # OUT defaults to runs/gpu-check
#   GPU_CHECK_DEVICE=cpu bash bench/gpu_check.sh   # rehearse every step on the CPU (about 2.5 minutes)
# It runs from the source tree (PYTHONPATH), so a machine whose image has torch and transformers
# but not this package needs nothing installed; a missing pure-Python dependency (simpy) is taken
# from wheels in .whl/ when they are there (`pip download --no-deps -d .whl simpy`).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/gpu-check}"
DEVICE="${GPU_CHECK_DEVICE:-cuda}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if ! python3 -c "import simpy" 2>/dev/null && compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/gpu-check-site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/gpu-check-site"
fi
if [ "$DEVICE" = cuda ] && ! python3 -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo '{"goals": {}, "cuda": false, "note": "no CUDA device: nothing to check on a GPU"}'
  exit 0
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" 2>&1 \
  || echo "no GPU ($DEVICE)" > "$OUT/gpu.txt"
python3 -c "import platform, numpy, simpy, torch, transformers; print(f'python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, numpy {numpy.__version__}, simpy {simpy.__version__}')" > "$OUT/versions.txt" 2>&1

step() {  # name, seconds, command...: run with a time limit, keep its log and its last (JSON) line
  local name="$1" limit="$2"; shift 2
  local began=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 1 "$OUT/$name.log" > "$OUT/$name.json"
  echo "$name: exit $rc in $((SECONDS - began)) s" >&2
  echo "$rc" > "$OUT/$name.rc"
}

step exactness 90 python3 bench/gpu_exactness.py --device "$DEVICE"
step profile 90 python3 -m specrouter profile --ladder backend/zoo/default --quick --device "$DEVICE" --out "$OUT/ladder_profile.json"
step backend_speed 150 python3 bench/backend_speed.py --quick --device "$DEVICE"
step fidelity 150 python3 bench/fidelity.py --quick --device "$DEVICE" --out "$OUT/fidelity"

python3 - "$OUT" "$DEVICE" <<'PY'
import json, pathlib, platform, subprocess, sys
out = pathlib.Path(sys.argv[1])
summary = {
    "goals": {}, "device": sys.argv[2], "gpu": (out / "gpu.txt").read_text().strip(),
    "versions": (out / "versions.txt").read_text().strip(),
}
for name in ("exactness", "profile", "backend_speed", "fidelity"):
    rc = int((out / f"{name}.rc").read_text())
    try:
        result = json.loads((out / f"{name}.json").read_text())
    except (json.JSONDecodeError, FileNotFoundError):
        result = {}
    summary[name] = {"exit": rc, "timed_out": rc == 124}
    for goal, entry in (result.get("goals") or {}).items() if isinstance(result, dict) else ():
        summary["goals"][f"{name}: {goal}"] = entry
    summary["goals"][f"{name} ran"] = {"value": rc, "target": "== 0", "met": rc == 0}
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
summary.update(commit=commit, host=platform.node())
(out / "gpu_check.json").write_text(json.dumps(summary, indent=1) + "\n")
print(json.dumps(summary))
PY
