"""The world profile: what the backend profiler measured, in a form the simulator replays.

A *world profile* is a versioned JSON document (docs/design.md §5, "profile -> simulate -> run
for real -> compare").  The backend profiler writes it; the simulator's table latency model
(:mod:`sim.latency`) and empirical acceptance mode (:mod:`sim.acceptance`) read it.  This
module is pure Python + JSON so both worlds can import it.

Schema, version 2 (``ladder index`` = position in ``models``, cheapest first, target last)::

    {
      "schema": "specrouter-world-profile",
      "version": 2,
      "device": "cpu: 2-core x86_64, torch 2.13",           # free text: where it was measured
      "models": [
        {"name": "SmolLM2-135M", "params": 1.35e8,
         "kind": "network",                                # optional; "ngram": model-free (below)
         "pass_time": {                                    # V(b, n): one forward pass
           "batch_sizes": [1, 2, 4],                       # strictly increasing, >= 1
           "tokens": [1, 2, 4, 8],                         # positions fed per sequence, increasing
           "context": 256,                                 # committed context it was measured at
           "seconds": [[...4 values...], [...], [...]]     # seconds[i_batch][i_tokens] > 0
         }}
      ],
      "acceptance": [
        {"lower": 0, "upper": 2, "domain": null,           # pair of ladder indices, lower < upper
         "mode": "greedy",                                 # "greedy" or "sampling"
         "alpha": 0.71,                                    # mean per-token acceptance in [0, 1]
         "positions": [0.78, 0.72, 0.69],                  # P(accept position i | 0..i-1 accepted)
         "tv": [0.12, 0.4, 0.05],                          # TV(p_lower, p_upper) samples in [0, 1]
         "samples": 1200,                                  # positions measured
         "by_lookahead": [[0.8], [0.8, 0.7]]}              # optional: row K-1, see PairProfile
      ],
      "proposals": [                                       # optional: model-free members only
        {"member": 0, "domain": "edit", "mode": "greedy",
         "by_limit": [[0.4, 0.6], [0.4, 0.1, 0.5]],        # row K-1: pmf of tokens proposed 0..K
         "rounds": 310}
      ],
      "meta": {}                                           # anything else (prompts, seeds, ...)
    }

``positions`` and ``tv`` may be empty lists; ``domain`` is ``null`` for "all domains".

**Model-free members** (an n-gram prompt-lookup drafter, ``backend.ngram``; version 2): a
``models`` entry with ``"kind": "ngram"`` and ``"params": 0``.  It feeds no positions, so its
``pass_time`` table is the time of one *lookup pass* by rows: ``tokens`` is ``[1]`` (nominal,
one proposal per row), ``seconds[i][0]`` the seconds a pass of ``batch_sizes[i]`` rows takes,
``context`` the context length it was timed at.  Its ``proposals`` entries give, per domain,
for each limit ``K = 1 .. len(by_limit)``, the pmf of the number it proposes (``0 .. K``; each
row sums to 1).  The acceptance of its proposals by an upper member is an ordinary
``acceptance`` pair (``lower`` = the lookup) whose ``by_lookahead`` row ``c - 1`` is keyed by
the number of candidates verified, ``c`` (= the number proposed), as the simulator's verify
picks it.  Version-1 documents (no ``kind``, no ``proposals``) still load.
Every problem found on load raises :class:`WorldProfileError` naming the file and the key
path (e.g. ``models[1].pass_time.seconds[0][2]``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from traces.jsonfile import read_json_document

SCHEMA = "specrouter-world-profile"
VERSION = 2
READABLE_VERSIONS = (1, 2)
"""Versions :func:`validate_world_profile` reads (1: no model-free members, no ``proposals``)."""
NETWORK = "network"
MODEL_KINDS = (NETWORK, "ngram")
"""``ModelProfile.kind``: a network, or a model-free drafter (no weights, no KV cache)."""
ACCEPTANCE_MODES = ("greedy", "sampling")
LOOP_OVERHEAD_KEY = "loop_overhead"
"""``meta`` key of the serving loop's time outside forward passes, as the profiler measured it:
``{"per_pass_s", "per_row_s", "per_round_s"}`` (``backend.profile_calibration``)."""


class WorldProfileError(ValueError):
    """A world profile is malformed; the message names the source and the key path."""


@dataclass(frozen=True)
class PassTimeTable:
    """Measured pass times ``seconds[i][j]`` at ``batch_sizes[i]`` x ``tokens[j]``."""

    batch_sizes: tuple[int, ...]
    tokens: tuple[int, ...]
    seconds: tuple[tuple[float, ...], ...]
    context: int = 0


@dataclass(frozen=True)
class ModelProfile:
    """One ladder member.  ``kind != "network"``: model-free (``params`` 0; ``pass_time`` holds
    lookup passes by rows, ``tokens == (1,)`` nominal: module docstring)."""

    name: str
    params: float
    pass_time: PassTimeTable
    kind: str = NETWORK

    @property
    def model_free(self) -> bool:
        return self.kind != NETWORK


@dataclass(frozen=True)
class PairProfile:
    """Acceptance statistics of ``lower``'s tokens by ``upper`` (ladder indices)."""

    lower: int
    upper: int
    alpha: float
    domain: str | None = None
    mode: str = "greedy"
    positions: tuple[float, ...] = ()
    tv: tuple[float, ...] = ()
    samples: int = 0
    by_lookahead: tuple[tuple[float, ...], ...] = ()
    """Row ``K - 1``: ``P(accept k | 0..k-1)`` in rounds that draft ``K`` (greedy walks); empty when
    not measured.  Rounds of different lengths start at different places in the text, so one
    pooled ``positions`` row over-predicts long drafts."""


@dataclass(frozen=True)
class ProposalProfile:
    """How many tokens model-free ``member`` proposes on ``domain`` (None: all domains).

    ``by_limit[K - 1][n]``: the probability that a lookup allowed ``K`` tokens proposes ``n``
    (``n = 0 .. K``), measured in ``rounds`` lookups walked the way rounds run (``mode``: along
    greedy or sampled target continuations).
    """

    member: int
    by_limit: tuple[tuple[float, ...], ...]
    domain: str | None = None
    mode: str = "greedy"
    rounds: int = 0

    def pmf(self, limit: int) -> tuple[float, ...]:
        """The pmf for ``limit`` (a limit beyond the profiled ones uses the longest row)."""
        return self.by_limit[min(limit, len(self.by_limit)) - 1]


@dataclass(frozen=True)
class WorldProfile:
    device: str
    models: tuple[ModelProfile, ...]
    acceptance: tuple[PairProfile, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    proposals: tuple[ProposalProfile, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.models)

    @property
    def model_free(self) -> tuple[int, ...]:
        """Ladder indices of the model-free members (``LadderInfo.model_free``)."""
        return tuple(i for i, m in enumerate(self.models) if m.model_free)

    def proposal(self, member: int, domain: str | None = None) -> ProposalProfile | None:
        """The first proposal entry for ``(member, domain)``, falling back to ``domain=None``
        (the profiler writes greedy entries before sampling ones)."""
        fallback = None
        for entry in self.proposals:
            if entry.member == member:
                if entry.domain == domain:
                    return entry
                if entry.domain is None and fallback is None:
                    fallback = entry
        return fallback

    def pair(self, lower: int, upper: int, domain: str | None = None) -> PairProfile | None:
        """The statistics for ``(lower, upper, domain)``, falling back to ``domain=None``."""
        fallback = None
        for entry in self.acceptance:
            if entry.lower == lower and entry.upper == upper:
                if entry.domain == domain:
                    return entry
                if entry.domain is None:
                    fallback = entry
        return fallback


def _fail(source: str, key: str, problem: str) -> WorldProfileError:
    return WorldProfileError(f"{source}: {key}: {problem}")


def _get(obj: dict[str, Any], name: str, source: str, where: str) -> Any:
    if name not in obj:
        raise _fail(source, f"{where}{name}", "missing required key")
    return obj[name]


def _number(
    value: Any, source: str, key: str, low: float, high: float = math.inf, open_low: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(source, key, f"expected a finite number, got {value!r}")
    if value < low or value > high or (open_low and value == low):
        bound = f"> {low}" if open_low else f">= {low}"
        raise _fail(source, key, f"value {value!r} out of range ({bound}, <= {high})")
    return float(value)


def _int_list(value: Any, source: str, key: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise _fail(source, key, f"expected a non-empty list of integers, got {value!r}")
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int) or item < 1:
            raise _fail(source, f"{key}[{i}]", f"expected an integer >= 1, got {item!r}")
    if any(b <= a for a, b in zip(value, value[1:])):
        raise _fail(source, key, f"must be strictly increasing, got {value}")
    return tuple(value)


def _unknown_keys(obj: dict[str, Any], allowed: set[str], source: str, where: str) -> None:
    extra = sorted(set(obj) - allowed)
    if extra:
        raise _fail(source, f"{where}{extra[0]}", f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _table(obj: Any, source: str, where: str) -> PassTimeTable:
    if not isinstance(obj, dict):
        raise _fail(source, where.rstrip("."), "expected an object")
    _unknown_keys(obj, {"batch_sizes", "tokens", "context", "seconds"}, source, where)
    batches = _int_list(_get(obj, "batch_sizes", source, where), source, f"{where}batch_sizes")
    tokens = _int_list(_get(obj, "tokens", source, where), source, f"{where}tokens")
    context = int(_number(obj.get("context", 0), source, f"{where}context", 0))
    rows = _get(obj, "seconds", source, where)
    if not isinstance(rows, list) or len(rows) != len(batches):
        raise _fail(source, f"{where}seconds", f"expected {len(batches)} rows (one per batch size)")
    seconds = []
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(tokens):
            raise _fail(
                source, f"{where}seconds[{i}]", f"expected {len(tokens)} values (one per token count)"
            )
        seconds.append(
            tuple(
                _number(v, source, f"{where}seconds[{i}][{j}]", 0.0, open_low=True) for j, v in enumerate(row)
            )
        )
    return PassTimeTable(batches, tokens, tuple(seconds), context)


def _domain_and_mode(obj: dict[str, Any], source: str, where: str) -> tuple[str | None, str]:
    """An entry's ``domain`` (a string or null) and acceptance ``mode`` (default greedy)."""
    domain = obj.get("domain")
    if domain is not None and not isinstance(domain, str):
        raise _fail(source, f"{where}domain", f"expected a string or null, got {domain!r}")
    mode = obj.get("mode", "greedy")
    if mode not in ACCEPTANCE_MODES:
        raise _fail(source, f"{where}mode", f"expected one of {ACCEPTANCE_MODES}, got {mode!r}")
    return domain, str(mode)


def _pair(obj: Any, size: int, source: str, where: str) -> PairProfile:
    if not isinstance(obj, dict):
        raise _fail(source, where.rstrip("."), "expected an object")
    allowed = {"lower", "upper", "domain", "mode", "alpha", "positions", "tv", "samples", "by_lookahead"}
    _unknown_keys(obj, allowed, source, where)
    lower = int(_number(_get(obj, "lower", source, where), source, f"{where}lower", 0, size - 1))
    upper = int(_number(_get(obj, "upper", source, where), source, f"{where}upper", 0, size - 1))
    if lower >= upper:
        raise _fail(source, f"{where}upper", f"must exceed lower ({lower}), got {upper}")
    domain, mode = _domain_and_mode(obj, source, where)
    alpha = _number(_get(obj, "alpha", source, where), source, f"{where}alpha", 0.0, 1.0)
    lists = {}
    for name in ("positions", "tv"):
        values = obj.get(name, [])
        if not isinstance(values, list):
            raise _fail(source, f"{where}{name}", "expected a list of numbers in [0, 1]")
        lists[name] = tuple(_number(v, source, f"{where}{name}[{i}]", 0.0, 1.0) for i, v in enumerate(values))
    samples = int(_number(obj.get("samples", 0), source, f"{where}samples", 0))
    rows = obj.get("by_lookahead", [])
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise _fail(source, f"{where}by_lookahead", "expected a list of lists of numbers in [0, 1]")
    by_lookahead = tuple(
        tuple(_number(v, source, f"{where}by_lookahead[{k}][{i}]", 0.0, 1.0) for i, v in enumerate(row))
        for k, row in enumerate(rows)
    )
    return PairProfile(
        lower, upper, alpha, domain, mode, lists["positions"], lists["tv"], samples, by_lookahead
    )


def validate_world_profile(data: Any, source: str = "<world profile>") -> WorldProfile:
    """Check a decoded JSON document and build a :class:`WorldProfile` (raises on any problem)."""
    if not isinstance(data, dict):
        raise _fail(source, "<root>", "expected a JSON object")
    _unknown_keys(
        data, {"schema", "version", "device", "models", "acceptance", "proposals", "meta"}, source, ""
    )
    if data.get("schema") != SCHEMA:
        raise _fail(source, "schema", f"expected {SCHEMA!r}, got {data.get('schema')!r}")
    if data.get("version") not in READABLE_VERSIONS:
        raise _fail(
            source,
            "version",
            f"this reader understands versions {', '.join(map(str, READABLE_VERSIONS))}, "
            f"got {data.get('version')!r}",
        )
    device = data.get("device", "")
    if not isinstance(device, str):
        raise _fail(source, "device", f"expected a string, got {device!r}")
    raw_models = _get(data, "models", source, "")
    if not isinstance(raw_models, list) or not raw_models:
        raise _fail(source, "models", "expected a non-empty list (cheapest first, target last)")
    models = []
    for i, raw in enumerate(raw_models):
        where = f"models[{i}]."
        if not isinstance(raw, dict):
            raise _fail(source, f"models[{i}]", "expected an object")
        _unknown_keys(raw, {"name", "params", "pass_time", "kind"}, source, where)
        name = _get(raw, "name", source, where)
        if not isinstance(name, str) or not name:
            raise _fail(source, f"{where}name", f"expected a non-empty string, got {name!r}")
        kind = raw.get("kind", NETWORK)
        if kind not in MODEL_KINDS:
            raise _fail(source, f"{where}kind", f"expected one of {MODEL_KINDS}, got {kind!r}")
        if kind != NETWORK and i != 0:
            raise _fail(source, f"{where}kind", "a model-free member can only be the first (cheapest) member")
        if kind != NETWORK and i == len(raw_models) - 1:
            raise _fail(source, f"{where}kind", "the target cannot be model-free")
        raw_params = _get(raw, "params", source, where)
        if kind == NETWORK:
            params = _number(raw_params, source, f"{where}params", 0.0, open_low=True)
        else:
            params = _number(raw_params, source, f"{where}params", 0.0, 0.0)
        table = _table(_get(raw, "pass_time", source, where), source, f"{where}pass_time.")
        models.append(ModelProfile(name, params, table, kind))
    raw_pairs = data.get("acceptance", [])
    if not isinstance(raw_pairs, list):
        raise _fail(source, "acceptance", "expected a list")
    pairs = tuple(_pair(raw, len(models), source, f"acceptance[{i}].") for i, raw in enumerate(raw_pairs))
    raw_proposals = data.get("proposals", [])
    if not isinstance(raw_proposals, list):
        raise _fail(source, "proposals", "expected a list")
    proposals = tuple(
        _proposal(raw, models, source, f"proposals[{i}].") for i, raw in enumerate(raw_proposals)
    )
    meta = data.get("meta", {})
    if not isinstance(meta, dict):
        raise _fail(source, "meta", "expected an object")
    return WorldProfile(device, tuple(models), pairs, dict(meta), proposals)


PMF_TOLERANCE = 1e-6


def _proposal(obj: Any, models: list[ModelProfile], source: str, where: str) -> ProposalProfile:
    if not isinstance(obj, dict):
        raise _fail(source, where.rstrip("."), "expected an object")
    _unknown_keys(obj, {"member", "domain", "mode", "by_limit", "rounds"}, source, where)
    member = int(_number(_get(obj, "member", source, where), source, f"{where}member", 0, len(models) - 1))
    if not models[member].model_free:
        raise _fail(source, f"{where}member", f"member {member} ({models[member].name}) is not model-free")
    domain, mode = _domain_and_mode(obj, source, where)
    rows = _get(obj, "by_limit", source, where)
    if not isinstance(rows, list) or not rows:
        raise _fail(source, f"{where}by_limit", "expected a non-empty list of pmfs (row K-1 has K+1 values)")
    by_limit = []
    for k, row in enumerate(rows):
        key = f"{where}by_limit[{k}]"
        if not isinstance(row, list) or len(row) != k + 2:
            raise _fail(source, key, f"expected {k + 2} probabilities (proposing 0..{k + 1} tokens)")
        values = tuple(_number(v, source, f"{key}[{n}]", 0.0, 1.0) for n, v in enumerate(row))
        if abs(sum(values) - 1.0) > PMF_TOLERANCE:
            raise _fail(source, key, f"probabilities sum to {sum(values)!r}, expected 1")
        by_limit.append(values)
    rounds = int(_number(obj.get("rounds", 0), source, f"{where}rounds", 0))
    return ProposalProfile(member, tuple(by_limit), domain, mode, rounds)


def world_profile_to_dict(profile: WorldProfile) -> dict[str, Any]:
    """The JSON document for ``profile`` (inverse of :func:`validate_world_profile`)."""
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "device": profile.device,
        "models": [
            {
                "name": m.name,
                "params": m.params,
                "kind": m.kind,
                "pass_time": {
                    "batch_sizes": list(m.pass_time.batch_sizes),
                    "tokens": list(m.pass_time.tokens),
                    "context": m.pass_time.context,
                    "seconds": [list(row) for row in m.pass_time.seconds],
                },
            }
            for m in profile.models
        ],
        "acceptance": [
            {
                "lower": p.lower,
                "upper": p.upper,
                "domain": p.domain,
                "mode": p.mode,
                "alpha": p.alpha,
                "positions": list(p.positions),
                "tv": list(p.tv),
                "samples": p.samples,
                "by_lookahead": [list(row) for row in p.by_lookahead],
            }
            for p in profile.acceptance
        ],
        "proposals": [
            {
                "member": p.member,
                "domain": p.domain,
                "mode": p.mode,
                "by_limit": [list(row) for row in p.by_limit],
                "rounds": p.rounds,
            }
            for p in profile.proposals
        ],
        "meta": profile.meta,
    }


def load_world_profile(path: str | Path) -> WorldProfile:
    """Read and validate a world profile JSON file."""
    return validate_world_profile(read_json_document(path, WorldProfileError), str(path))


def save_world_profile(profile: WorldProfile, path: str | Path) -> None:
    """Validate (round-trip) and write ``profile`` as indented JSON."""
    document = world_profile_to_dict(profile)
    validate_world_profile(document, str(path))
    Path(path).write_text(json.dumps(document, indent=1) + "\n")


class LoopOverhead(NamedTuple):
    """Seconds the engine spends outside forward passes, per pass, per row and per finished round
    (``meta[LOOP_OVERHEAD_KEY]``: measured by ``backend.profile_calibration``, charged by the simulator)."""

    per_pass_s: float
    per_row_s: float
    per_round_s: float

    def seconds(self, rows: int, rounds_ending: int) -> float:
        return self.per_pass_s + self.per_row_s * rows + self.per_round_s * rounds_ending


NO_LOOP_OVERHEAD = LoopOverhead(0.0, 0.0, 0.0)


def loop_overhead(profile: WorldProfile | None) -> LoopOverhead:
    """The profile's loop overhead; zero without one (a roofline GPU cluster's scheduling overlaps
    its passes) or for a profile that was not calibrated in the engine."""
    raw = profile.meta.get(LOOP_OVERHEAD_KEY) if profile is not None else None
    if not isinstance(raw, dict):
        return NO_LOOP_OVERHEAD
    return LoopOverhead(*(float(raw.get(name, 0.0)) for name in LoopOverhead._fields))
