"""A simulator cluster for a profiled ladder: its models on one device, the profile's pass times.

What :func:`specrouter.experiments.runs.run_simulated` needs to predict a real ladder: the
profile (``specrouter profile``) gives the pass-time tables and acceptance; the cluster here
puts every model on one shared device (passes one at a time, as on the real machine), pads
ragged batches like the backend, and limits running requests to the engine's slots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from traces.jsonfile import read_json_document


def cluster_for_profile(
    profile_path: str | Path,
    max_batch: int,
    ladder_dir: str | Path | None = None,
    max_running: int = 0,
    pass_tokens: int = 2048,
) -> Any:
    """A one-device cluster of the profiled ladder's models with the profile's pass-time tables.

    ``max_running`` limits how many requests decode at once (the real engine's ``max_batch``
    slots, FIFO admission); 0 leaves it unlimited.
    """
    from sim.config import cluster_from_dict
    from traces.world_profile import load_world_profile

    profile = load_world_profile(profile_path)
    models: list[dict[str, Any]] = []
    for index, model in enumerate(profile.models):
        if model.model_free:  # the n-gram lookup: host CPU, its cost from the profile's table
            models.append({"name": model.name, "kind": "ngram"})
            continue
        shape = _model_shape(Path(ladder_dir) / model.name if ladder_dir else None)
        models.append({"name": model.name, "params": model.params, "gpu": "device", **shape})
        if index and model.params < profile.models[index - 1].params:
            raise ValueError(
                f"{profile_path}: models must be ordered cheapest first ({model.name} is smaller)"
            )
    raw = {
        "gpus": {"device": "CPU"},
        "models": models,
        "max_batch_size": max_batch,
        "max_batched_tokens": pass_tokens,  # the engine's padded positions per pass
        "max_running_requests": max_running,
        "padded_batches": True,  # the profiled backend pads ragged batches to the widest feed
        "profile": str(profile_path),
    }
    return cluster_from_dict(raw, f"profile:{Path(profile_path).name}")


def _model_shape(model_dir: Path | None) -> dict[str, Any]:
    """Layers / widths from a Hugging Face ``config.json`` (placeholders when absent: the
    table latency model does not use them)."""
    shape = {"layers": 1, "hidden": 64, "heads": 1, "kv_heads": 1, "bytes_per_weight": 4.0, "kv_bytes": 4.0}
    config_path = model_dir / "config.json" if model_dir else None
    if config_path and config_path.exists():
        config = read_json_document(config_path, ValueError)
        heads = int(config.get("num_attention_heads", 1))
        shape.update(
            layers=int(config.get("num_hidden_layers", 1)),
            hidden=int(config.get("hidden_size", 64)),
            heads=heads,
            kv_heads=int(config.get("num_key_value_heads", heads)),
        )
    return shape
