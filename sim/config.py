"""Cluster configuration: GPU types, model shapes, placement and batching limits.

Everything is a frozen dataclass buildable from a plain dict / JSON file with
:func:`cluster_from_dict` / :func:`load_cluster`; a bad key raises :class:`ConfigError`
naming the key path and the problem (e.g. ``models[2].gpu: unknown GPU 'g9'``).

A *GPU* here is one scheduling unit: a device (or a tensor-parallel group, ``count``
devices acting as one with ``count`` x peak and bandwidth).  Models placed on the same GPU
contend for it: their passes run one at a time.  A model's ladder index is its position in
``models`` (cheapest first, target last).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from traces.jsonfile import read_json_document


class ConfigError(ValueError):
    """A cluster or scenario config is malformed; the message names the key path."""


@dataclass(frozen=True)
class GPUSpec:
    """A device type: dense peak FLOP/s, memory bandwidth (bytes/s), memory (bytes).

    ``flops_efficiency`` / ``bandwidth_efficiency`` are the achievable fractions ``eta`` of
    the peaks; ``layer_overhead_s`` + ``pass_overhead_s`` model kernel-launch and framework
    overhead per pass (``pass_overhead_s + layers * layer_overhead_s``).
    """

    name: str
    peak_flops: float
    bandwidth: float
    memory: float
    count: int = 1
    flops_efficiency: float = 0.6
    bandwidth_efficiency: float = 0.8
    layer_overhead_s: float = 15e-6
    pass_overhead_s: float = 1e-4


@dataclass(frozen=True)
class ModelSpec:
    """Enough of a decoder's shape for a roofline: parameters, layers, widths, weight bytes."""

    name: str
    params: float
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    gpu: str
    bytes_per_weight: float = 2.0
    kv_bytes: float = 2.0
    kind: str = "network"  # or a model-free kind (MODEL_FREE_KINDS): module docstring
    propose: dict[str, float] = field(default_factory=dict)  # model-free: P(match) per domain
    accept: dict[str, float] = field(default_factory=dict)  # model-free: acceptance per domain
    pass_s: float = 2e-5  # model-free: seconds per lookup pass ...
    row_s: float = 5e-6  # ... plus seconds per row

    @property
    def model_free(self) -> bool:
        return self.kind != "network"

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads if self.heads else 0

    @property
    def kv_bytes_per_token(self) -> float:
        """Bytes of K and V cached per token: ``2 * layers * kv_heads * head_dim * kv_bytes``."""
        return 2.0 * self.layers * self.kv_heads * self.head_dim * self.kv_bytes

    @property
    def weight_bytes(self) -> float:
        return self.params * self.bytes_per_weight


SCHEDULERS = ("lockstep", "pipelined")
MODEL_FREE_KINDS = ("ngram",)
HOST = ""
"""``ModelSpec.gpu`` of a model-free member placed on no GPU: it contends with nothing."""
ANY_DOMAIN = "*"
"""The key of ``propose`` / ``accept`` that covers domains not named (and requests without one)."""


@dataclass(frozen=True)
class ClusterConfig:
    """The ladder, the GPUs and the batching limits of every model server."""

    name: str
    gpus: dict[str, GPUSpec]
    models: tuple[ModelSpec, ...]
    max_batch_size: int = 64
    max_batched_tokens: int = 8192
    max_running_requests: int = 0  # requests decoding at once (FIFO admission); 0 = no limit
    padded_batches: bool = False  # a pass costs batch x widest feed (the torch backend pads ragged rows)
    # "lockstep": the real engine's loop (policies.serving), one pass at a time on the ladder;
    # "pipelined": one continuous-batching server per model, co-placed models share their GPU
    # (simulated only: the backend runs lockstep)
    scheduler: str = "lockstep"
    profile: str | None = None  # path of a world profile: table latency and empirical acceptance
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.models)

    @property
    def target(self) -> int:
        return len(self.models) - 1

    @property
    def model_free(self) -> tuple[int, ...]:
        """Ladder indices of the model-free members (``LadderInfo.model_free``)."""
        return tuple(i for i, m in enumerate(self.models) if m.model_free)

    def gpu_of(self, model: int) -> GPUSpec:
        return self.gpus[self.models[model].gpu]

    def devices(self) -> tuple[int, ...]:
        """``LadderInfo.devices`` under this cluster's scheduler: lockstep runs one pass at a
        time on the whole ladder (every model on device 0); pipelined numbers the GPUs in
        order of first use, and a model placed on no GPU (``HOST``) contends with nothing."""
        if self.scheduler != "pipelined":
            return (0,) * len(self.models)
        numbers: dict[object, int] = {}
        placed = []
        for index, model in enumerate(self.models):
            key = model.gpu if model.gpu != HOST else (HOST, index)
            placed.append(numbers.setdefault(key, len(numbers)))
        return tuple(placed)

    def shared_gpus(self) -> dict[str, tuple[int, ...]]:
        """GPU name -> ladder indices of the models placed on it (only GPUs with >= 2 models)."""
        placed: dict[str, list[int]] = {}
        for index, model in enumerate(self.models):
            if model.gpu != HOST:
                placed.setdefault(model.gpu, []).append(index)
        return {gpu: tuple(ms) for gpu, ms in placed.items() if len(ms) > 1}


# Built-in device types (dense bf16 peaks; CPU figures are a 2-core laptop/server guess).
GPU_TYPES: dict[str, dict[str, Any]] = {
    "H100": {"peak_flops": 989e12, "bandwidth": 3.35e12, "memory": 80e9},
    "H200": {"peak_flops": 989e12, "bandwidth": 4.8e12, "memory": 141e9},
    "A100": {"peak_flops": 312e12, "bandwidth": 2.0e12, "memory": 80e9},
    "CPU": {
        "peak_flops": 1.0e11,
        "bandwidth": 2.0e10,
        "memory": 16e9,
        "flops_efficiency": 0.3,
        "bandwidth_efficiency": 0.5,
        "layer_overhead_s": 2.5e-4,
        "pass_overhead_s": 1.5e-3,
    },
}


def _check_fields(cls: type, raw: dict[str, Any], where: str, required: set[str]) -> None:
    known = {f.name for f in fields(cls)}
    for key in raw:
        if key not in known:
            raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(sorted(known))})")
    for key in sorted(required):
        if key not in raw:
            raise ConfigError(f"{where}.{key}: missing required key")


def _positive(value: Any, key: str, integer: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value) or value <= 0:
        noun = "a positive integer" if integer else "a positive number"
        raise ConfigError(f"{key}: expected {noun}, got {value!r}")


def gpu_from_dict(name: str, raw: Any, where: str) -> GPUSpec:
    """``raw`` is a built-in type name (``"H200"``) or a dict, optionally with ``"type"`` as base."""
    if isinstance(raw, str):
        raw = {"type": raw}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a GPU type name or an object, got {raw!r}")
    spec = dict(raw)
    base_name = spec.pop("type", None)
    if base_name is not None:
        if base_name not in GPU_TYPES:
            raise ConfigError(f"{where}.type: unknown GPU type {base_name!r} (known: {', '.join(GPU_TYPES)})")
        spec = {**GPU_TYPES[base_name], **spec}
    spec.setdefault("name", name)
    _check_fields(GPUSpec, spec, where, {"peak_flops", "bandwidth", "memory"})
    for key in ("peak_flops", "bandwidth", "memory", "flops_efficiency", "bandwidth_efficiency"):
        if key in spec:
            _positive(spec[key], f"{where}.{key}")
    if "count" in spec:
        _positive(spec["count"], f"{where}.count", integer=True)
    return GPUSpec(**spec)


MODEL_FREE_KEYS = {"name", "kind", "gpu", "params", "propose", "accept", "pass_s", "row_s"}


def _probabilities(raw: Any, key: str, open_low: bool) -> dict[str, float]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f'{key}: expected an object domain -> probability ("*": other domains)')
    for domain, value in raw.items():
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or not (value > 0.0 if open_low else value >= 0.0) or value > 1.0:
            bounds = "in (0, 1]" if open_low else "in [0, 1]"
            raise ConfigError(f"{key}.{domain}: expected a probability {bounds}, got {value!r}")
    return {str(domain): float(value) for domain, value in raw.items()}


def model_free_from_dict(
    raw: dict[str, Any], where: str, gpus: dict[str, GPUSpec], profiled: bool
) -> ModelSpec:
    """A model-free member (module docstring); ``profiled``: the cluster has a world profile."""
    kind = raw["kind"]
    for key in raw:
        if key not in MODEL_FREE_KEYS:
            shape = key in {f.name for f in fields(ModelSpec)}
            why = "a model-free member has no shape" if shape else "unknown key"
            takes = ", ".join(sorted(MODEL_FREE_KEYS))
            raise ConfigError(f"{where}.{key}: {why} (a {kind!r} member takes {takes})")
    if "name" not in raw:
        raise ConfigError(f"{where}.name: missing required key")
    if raw.get("params", 0) != 0:
        raise ConfigError(
            f"{where}.params: a model-free member has no weights (0 or absent), got {raw['params']!r}"
        )
    gpu = raw.get("gpu", HOST)
    if gpu != HOST and gpu not in gpus:
        raise ConfigError(f"{where}.gpu: unknown GPU {gpu!r} (declared: {', '.join(gpus)})")
    rates: dict[str, dict[str, float]] = {}
    for key in ("propose", "accept"):
        if key in raw:
            rates[key] = _probabilities(raw[key], f"{where}.{key}", open_low=key == "accept")
        elif not profiled:
            what = "P(a match) per domain" if key == "propose" else "the acceptance of its tokens per domain"
            raise ConfigError(
                f'{where}.{key}: missing required key ({what}, e.g. {{"*": 0.5}}; '
                "or give the cluster a world profile that has them)"
            )
    for key in ("pass_s", "row_s"):
        if key in raw:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ConfigError(f"{where}.{key}: expected seconds >= 0, got {value!r}")
    costs = {key: float(raw[key]) for key in ("pass_s", "row_s") if key in raw}
    return ModelSpec(
        raw["name"], 0.0, 0, 0, 0, 0, gpu, 0.0, 0.0, kind,
        rates.get("propose", {}), rates.get("accept", {}), **costs,
    )  # fmt: skip


def model_from_dict(
    raw: Any, where: str, gpus: dict[str, GPUSpec], index: int = 0, size: int = 1, profiled: bool = False
) -> ModelSpec:
    """A ladder member of ``size``; ``index`` its position (a model-free member must be first)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected an object, got {raw!r}")
    kind = raw.get("kind", "network")
    if kind != "network":
        if kind not in MODEL_FREE_KINDS:
            known = ", ".join(("network",) + MODEL_FREE_KINDS)
            raise ConfigError(f"{where}.kind: unknown model kind {kind!r} (known: {known})")
        if index == size - 1:
            raise ConfigError(
                f"{where}.kind: the target cannot be model-free ({kind!r} proposes, it cannot verify)"
            )
        if index != 0:
            raise ConfigError(
                f"{where}.kind: a model-free member ({kind!r}) can only be the first (cheapest) model, "
                f"it is at index {index}"
            )
        return model_free_from_dict(raw, where, gpus, profiled)
    for key in ("propose", "accept", "pass_s", "row_s"):
        if key in raw:
            raise ConfigError(f'{where}.{key}: only a model-free member ("kind": "ngram") takes {key!r}')
    _check_fields(ModelSpec, raw, where, {"name", "params", "layers", "hidden", "heads", "kv_heads", "gpu"})
    for key in ("layers", "hidden", "heads", "kv_heads"):
        _positive(raw[key], f"{where}.{key}", integer=True)
    if raw.get("params") == 0:
        raise ConfigError(
            f"{where}.params: 0 parameters -- a model-free member (an n-gram lookup) needs "
            '"kind": "ngram" (and no shape)'
        )
    for key in ("params", "bytes_per_weight", "kv_bytes"):
        if key in raw:
            _positive(raw[key], f"{where}.{key}")
    if raw["gpu"] not in gpus:
        raise ConfigError(f"{where}.gpu: unknown GPU {raw['gpu']!r} (declared: {', '.join(gpus)})")
    if raw["hidden"] % raw["heads"]:
        raise ConfigError(f"{where}.heads: hidden {raw['hidden']} is not a multiple of heads {raw['heads']}")
    return ModelSpec(**raw)


def cluster_from_dict(raw: Any, source: str = "cluster") -> ClusterConfig:
    """Build and check a :class:`ClusterConfig` from a decoded JSON object."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected an object, got {type(raw).__name__}")
    _check_fields(ClusterConfig, raw, source, {"gpus", "models"})
    if not isinstance(raw["gpus"], dict) or not raw["gpus"]:
        raise ConfigError(f"{source}.gpus: expected a non-empty object name -> GPU")
    gpus = {name: gpu_from_dict(name, spec, f"{source}.gpus.{name}") for name, spec in raw["gpus"].items()}
    if not isinstance(raw["models"], list) or not raw["models"]:
        raise ConfigError(f"{source}.models: expected a non-empty list (cheapest first, target last)")
    count, profiled = len(raw["models"]), raw.get("profile") is not None
    models = tuple(
        model_from_dict(m, f"{source}.models[{i}]", gpus, i, count, profiled)
        for i, m in enumerate(raw["models"])
    )
    for key in ("max_batch_size", "max_batched_tokens"):
        if key in raw:
            _positive(raw[key], f"{source}.{key}", integer=True)
    scheduler = raw.get("scheduler", "lockstep")
    if scheduler not in SCHEDULERS:
        raise ConfigError(
            f"{source}.scheduler: expected one of {', '.join(SCHEDULERS)}, got {scheduler!r} "
            "(lockstep = the real engine's serving loop; pipelined = one server per model, simulated only)"
        )
    running = raw.get("max_running_requests", 0)
    if not isinstance(running, int) or isinstance(running, bool) or running < 0:
        raise ConfigError(
            f"{source}.max_running_requests: expected an integer >= 0 (0 = no limit), got {running!r}"
        )
    for gpu_name, gpu in gpus.items():
        placed = [m for m in models if m.gpu == gpu_name]
        weights = sum(m.weight_bytes for m in placed)
        if weights > gpu.memory * gpu.count:
            names = ", ".join(m.name for m in placed)
            raise ConfigError(
                f"{source}.gpus.{gpu_name}: weights of {names} need {weights / 1e9:.1f} GB, more than its "
                f"{gpu.memory * gpu.count / 1e9:.1f} GB (raise count for tensor parallelism, or move a model)"
            )
    options = {k: v for k, v in raw.items() if k not in ("gpus", "models")}
    return ClusterConfig(gpus=gpus, models=models, **{"name": source, **options})


def load_cluster(path: str | Path) -> ClusterConfig:
    return cluster_from_dict(read_json_document(path, ConfigError), str(path))
