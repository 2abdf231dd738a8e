"""Policies by name for the experiment commands, and the knobs a search may tune.

Names are the policy registry's (:mod:`policies.registry`): ``target-only``,
``static:0>2>3:4,1``, ``dynamic-lookahead[:D]``, ``specrouter[:k=v,...]``,
``bandit[:k=v,...]``, ``bandit-ucb1``, ``oracle`` (simulator only).  ``params`` given
separately (a search trial's knobs) are added to the name's own options.
"""

from __future__ import annotations

from typing import Any

from policies import registry
from policies.baselines import DynamicLookahead
from policies.contract import Policy
from specrouter.experiments.search import Knob

# Knobs searched by default, per policy (override or extend with --knob NAME=LOW:HIGH).
DEFAULT_KNOBS: dict[str, tuple[Knob, ...]] = {
    "specrouter": (
        Knob("time_rate", 0.005, 0.3, log=True),  # EMA rate of the pass-time estimates
        Knob("pair_rate", 0.002, 0.2, log=True),  # EMA rate of pair similarity / acceptance
        Knob("optimism", 0.0, 2.0),  # exploration bonus c / sqrt(1 + n_eff)
        Knob("hysteresis", 0.0, 0.2),  # keep the chain while within this fraction of the best
        Knob("surprise", 0.05, 0.5),  # re-plan when realised T_eff leaves the prediction by this
        Knob("max_lookahead", 2, 8, integer=True),  # lookahead bound per level
    ),
    "bandit": (Knob("gamma", 0.95, 0.9999), Knob("exploration", 0.05, 2.0, log=True)),
    "dynamic-lookahead": (Knob("initial", 1, 8, integer=True), Knob("maximum", 4, 32, integer=True)),
}


class UnknownPolicyError(ValueError):
    """A policy name that cannot be built; the message says what the known names are."""


def policy_head(name: str) -> str:
    """``specrouter:hysteresis=0.1`` -> ``specrouter``."""
    return name.strip().partition(":")[0]


def known_policy_names() -> list[str]:
    return list(registry.POLICY_NAMES)


def make_policy(name: str, params: dict[str, Any] | None = None, truth: Any = None) -> Policy:
    """Build ``name`` (a registry spec) with extra constructor keyword arguments ``params``.

    ``truth`` is the simulated world's :class:`policies.contract.WorldTruth` (the oracle's input).
    """
    params = dict(params or {})
    head = policy_head(name)
    if head == "dynamic-lookahead" and params:
        drafter = int(name.partition(":")[2] or params.pop("drafter", 0))
        unknown = set(params) - {"initial", "maximum"}
        if unknown:
            raise UnknownPolicyError(
                f"dynamic-lookahead has no knob(s) {sorted(unknown)}; it has initial, maximum"
            )
        initial, maximum = int(params.get("initial", 5)), int(params.get("maximum", 32))
        return DynamicLookahead(drafter=drafter, initial=initial, maximum=maximum)
    spec = name
    if params:
        options = ",".join(f"{k}={v}" for k, v in sorted(params.items()))
        spec = f"{name},{options}" if ":" in name else f"{name}:{options}"
    try:
        return registry.make_policy(spec, world=truth)
    except TypeError as error:  # an unknown constructor keyword
        raise UnknownPolicyError(f"policy {spec!r}: {error}") from None
    except ValueError as error:
        raise UnknownPolicyError(str(error)) from None


def check_policy_name(name: str, real_backend: bool = False) -> None:
    """Raise :class:`UnknownPolicyError` (what to do included) when ``name`` cannot be built."""
    head = policy_head(name)
    if head not in registry.POLICY_NAMES:
        raise UnknownPolicyError(f"unknown policy {name!r}; known: {', '.join(registry.POLICY_NAMES)}")
    if head == "oracle":
        if real_backend:
            raise UnknownPolicyError(
                "the oracle runs only in the simulator (it reads the world's true acceptance and "
                "latency); drop it from --policy with --backend real"
            )
        return
    make_policy(name)


def default_knobs(name: str) -> tuple[Knob, ...]:
    """The knobs searched when the user gives no ``--knob`` (empty when none are declared)."""
    return DEFAULT_KNOBS.get(policy_head(name), ())
