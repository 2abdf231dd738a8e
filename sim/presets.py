"""Preset clusters: the ladders speculative-decoding papers use, and the backend's CPU ladder.

* ``llama`` -- Llama-style 68M / 1B / 8B / 70B on H200-class GPUs: the two small models
  share one GPU (they contend), the 8B has its own, the 70B runs tensor-parallel on two.
* ``qwen`` -- Qwen2.5-style 0.5B / 1.5B / 7B / 32B on H100-class GPUs (small pair shared).
* ``cpu`` -- the backend zoo's default ladder (``draft-0.2m`` / ``mid-1.3m`` / ``target-8m``,
  fp32) on one CPU that all three share.  Pass it a world profile (``--profile``) to use
  the measured table instead of the roofline guess.

Shapes are the published configurations (layers, hidden size, attention / KV heads).
"""

from __future__ import annotations

from typing import Any

from sim.config import ClusterConfig, ConfigError, cluster_from_dict


def _model(
    name: str, params: float, layers: int, hidden: int, heads: int, kv: int, gpu: str
) -> dict[str, Any]:
    shape = {"layers": layers, "hidden": hidden, "heads": heads, "kv_heads": kv}
    return {"name": name, "params": params, **shape, "gpu": gpu}


PRESETS: dict[str, dict[str, Any]] = {
    "llama": {
        "gpus": {"small": "H200", "mid": "H200", "big": {"type": "H200", "count": 2}},
        "models": [
            _model("llama-68m", 6.8e7, 2, 768, 12, 12, "small"),
            _model("llama-1b", 1.24e9, 16, 2048, 32, 8, "small"),
            _model("llama-8b", 8.03e9, 32, 4096, 32, 8, "mid"),
            _model("llama-70b", 7.06e10, 80, 8192, 64, 8, "big"),
        ],
        "max_batch_size": 64,
        "max_batched_tokens": 8192,
        "scheduler": "pipelined",
    },
    "qwen": {
        "gpus": {"small": "H100", "mid": "H100", "big": "H100"},
        "models": [
            _model("qwen2.5-0.5b", 4.9e8, 24, 896, 14, 2, "small"),
            _model("qwen2.5-1.5b", 1.54e9, 28, 1536, 12, 2, "small"),
            _model("qwen2.5-7b", 7.6e9, 28, 3584, 28, 4, "mid"),
            _model("qwen2.5-32b", 3.28e10, 64, 5120, 40, 8, "big"),
        ],
        "max_batch_size": 64,
        "max_batched_tokens": 8192,
        "scheduler": "pipelined",
    },
    "cpu": {
        "gpus": {"cpu": "CPU"},
        "models": [
            {**_model("draft-0.2m", 1.81e5, 1, 64, 2, 2, "cpu"), "bytes_per_weight": 4.0, "kv_bytes": 4.0},
            {**_model("mid-1.3m", 1.26e6, 3, 160, 5, 5, "cpu"), "bytes_per_weight": 4.0, "kv_bytes": 4.0},
            {**_model("target-8m", 8.09e6, 6, 320, 5, 5, "cpu"), "bytes_per_weight": 4.0, "kv_bytes": 4.0},
        ],
        "max_batch_size": 8,
        "max_batched_tokens": 2048,
    },
}


def preset(name: str, profile: str | None = None) -> ClusterConfig:
    """A preset cluster by name; ``profile`` attaches a world profile (table latency)."""
    if name not in PRESETS:
        raise ConfigError(f"cluster preset {name!r} unknown (known: {', '.join(PRESETS)})")
    raw = dict(PRESETS[name])
    if profile is not None:
        raw["profile"] = profile
    return cluster_from_dict(raw, name)
