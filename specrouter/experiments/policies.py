"""Policies by name for the experiment commands, and the knobs a search may tune.

Names the commands accept (``--policy``):

* ``target-only``;
* ``static:M0[3]>M2[2]>M3`` -- a fixed route written as :class:`policies.contract.Route`
  prints it (ladder indices, lookahead per non-target member in brackets);
* ``dynamic-lookahead`` (knobs ``drafter``, ``initial``, ``maximum``);
* every name of the policy registry (:mod:`policies.registry`), e.g. ``specrouter``.

``params`` are keyword arguments of the policy's constructor.
"""

from __future__ import annotations

import re
from typing import Any

from policies.baselines import DynamicLookahead, StaticChain, TargetOnly
from policies.contract import Policy
from specrouter.experiments.search import Knob

_STATIC = re.compile(r"^static:((?:M\d+\[\d+\]>)*)M(\d+)$")
_STATIC_LEVEL = re.compile(r"M(\d+)\[(\d+)\]")

# Knobs searched by default, per policy name (override or extend with --knob).
DEFAULT_KNOBS: dict[str, tuple[Knob, ...]] = {
    "dynamic-lookahead": (Knob("initial", 1, 8, integer=True), Knob("maximum", 4, 32, integer=True)),
}


class UnknownPolicyError(ValueError):
    """A policy name the commands do not know; the message lists the known ones."""


def parse_static(name: str) -> StaticChain:
    """``static:M0[3]>M2[2]>M3`` -> ``StaticChain((0, 2, 3), (3, 2))``."""
    match = _STATIC.match(name)
    if not match:
        raise UnknownPolicyError(
            f"cannot read static route {name!r}: write it like static:M0[3]>M2[2]>M3 "
            "(ladder indices, lookahead per non-target member in brackets, target last)"
        )
    levels = [(int(m), int(g)) for m, g in _STATIC_LEVEL.findall(match.group(1))]
    chain = tuple(m for m, _ in levels) + (int(match.group(2)),)
    return StaticChain(chain, tuple(g for _, g in levels), name=name)


def registry_names() -> list[str]:
    try:
        from policies import registry
    except ImportError:
        return []
    return sorted(registry.policy_names())


def known_policy_names() -> list[str]:
    return sorted(
        {"target-only", "dynamic-lookahead", "static:M<i>[<lookahead>]>...>M<target>"} | set(registry_names())
    )


def make_policy(name: str, params: dict[str, Any] | None = None, **context: Any) -> Policy:
    """Build the policy called ``name`` with constructor keyword arguments ``params``.

    ``context`` (e.g. ``truth=`` for the oracle) is passed on to registry policies that take it.
    """
    params = dict(params or {})
    if name == "target-only":
        return TargetOnly()
    if name.startswith("static:"):
        return parse_static(name)
    if name == "dynamic-lookahead":
        return DynamicLookahead(**{k: int(v) for k, v in params.items()})
    if name in registry_names():
        from policies import registry

        return registry.make_policy(name, **params, **context)  # type: ignore[no-any-return]
    raise UnknownPolicyError(f"unknown policy {name!r}: choose one of {', '.join(known_policy_names())}")


def default_knobs(name: str) -> tuple[Knob, ...]:
    """The knobs searched when the user gives no ``--knob`` (empty when the policy has none)."""
    if name in DEFAULT_KNOBS:
        return DEFAULT_KNOBS[name]
    if name in registry_names():
        from policies import registry

        knobs = getattr(registry, "policy_knobs", None)
        if knobs is not None:
            return tuple(Knob(**spec) for spec in knobs(name))
    return ()
