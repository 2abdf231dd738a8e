"""Policy names -> policies, for the command line, scenarios and benchmarks.

=============================  ===============================================================
``target-only``                 plain decoding on the target
``static:0>2>3:4,1``            a fixed chain (ladder indices, target last) and its lookaheads;
                                ``static:M0[4]>M2[1]>M3`` (how a Route prints) is accepted too
``dynamic-lookahead[:D]``       Hugging Face's heuristic with drafter ``D`` (default 0)
``specrouter[:k=v,...]``        SpecRouter; options are its keyword arguments, e.g.
                                ``specrouter:acceptance=sampling,hysteresis=0.05``
``bandit[:k=v,...]``            discounted-UCB bandit over chains; ``bandit-ucb1`` is gamma = 1
``oracle[:time_bucket=S]``      best route under the world's truth (needs ``world=``)
=============================  ===============================================================
"""

from __future__ import annotations

import re
from typing import Any

from policies.bandit import ChainBandit
from policies.baselines import DynamicLookahead, StaticChain, TargetOnly
from policies.contract import Policy, WorldTruth
from policies.cost_model import enumerate_chains
from policies.oracle import Oracle
from policies.specrouter_policy import SpecRouter

POLICY_NAMES = ("target-only", "static", "dynamic-lookahead", "specrouter", "bandit", "bandit-ucb1", "oracle")
_ROUTE_LEVEL = re.compile(r"^M(\d+)\[(\d+)\]$")


def policy_names() -> list[str]:
    """Names :func:`make_policy` builds (``static`` takes a route after a colon)."""
    return [name for name in POLICY_NAMES if name != "static"]


def make_policy(
    spec: str, *, world: WorldTruth | None = None, truth: WorldTruth | None = None, **params: Any
) -> Policy:
    """Build a fresh policy from its name (see the module docstring).

    ``params`` are constructor keyword arguments, merged over options written in the name;
    ``world`` / ``truth`` (synonyms) give the oracle the world's truth.
    """
    world = world if world is not None else truth
    head, _, rest = spec.strip().partition(":")
    if head == "target-only":
        return TargetOnly()
    if head == "static":
        return _static(spec, rest)
    if head == "dynamic-lookahead":
        try:
            drafter = int(rest) if rest else 0
        except ValueError:
            raise ValueError(f"policy {spec!r}: drafter must be a ladder index, got {rest!r}") from None
        return DynamicLookahead(drafter=drafter)
    if head == "specrouter":
        options = {"name": spec if rest else None, **_options(spec, rest), **params}
        return SpecRouter(**options)
    if head in ("bandit", "bandit-ucb1"):
        options = {"name": spec if rest else None, **_options(spec, rest), **params}
        if head == "bandit-ucb1":
            options["gamma"] = 1.0
        return ChainBandit(**options)
    if head == "oracle":
        if world is None:
            raise ValueError(f"policy {spec!r} needs the world's truth: it runs in the simulator only")
        return Oracle(world, **{**_options(spec, rest), **params})
    raise ValueError(f"unknown policy {spec!r}; known: {', '.join(POLICY_NAMES)}")


def static_spec(chain: tuple[int, ...], lookaheads: tuple[int, ...]) -> str:
    """The registry name of a static route: ``static:0>2>3:4,1``."""
    return f"static:{'>'.join(map(str, chain))}:{','.join(map(str, lookaheads))}"


def every_static_chain(ladder_size: int, lookahead: int = 4) -> list[str]:
    """One static spec per speculative chain: drafter ``lookahead``, intermediates 1."""
    return [
        static_spec(chain, (lookahead,) + (1,) * (len(chain) - 2))
        for chain in enumerate_chains(ladder_size)
        if len(chain) > 1
    ]


def _static(spec: str, rest: str) -> StaticChain:
    if rest.startswith("M"):  # the way a Route prints: M0[4]>M2[1]>M3
        *levels, last = rest.split(">")
        matches = [_ROUTE_LEVEL.match(level) for level in levels]
        if all(matches) and re.fullmatch(r"M\d+", last):
            chain = tuple(int(m.group(1)) for m in matches if m) + (int(last[1:]),)
            lookaheads = tuple(int(m.group(2)) for m in matches if m)
            return StaticChain(chain, lookaheads, name=spec)
        raise ValueError(f"policy {spec!r}: expected static:M0[4]>M2[1]>M3 or static:0>2>3:4,1")
    chain_text, _, lookahead_text = rest.partition(":")
    try:
        chain = tuple(int(x) for x in chain_text.split(">"))
        lookaheads = tuple(int(x) for x in lookahead_text.split(",")) if lookahead_text else ()
    except ValueError:
        raise ValueError(
            f"policy {spec!r}: expected static:<i>j>...>target>:<lookaheads>, e.g. static:0>2>3:4,1"
        ) from None
    return StaticChain(chain, lookaheads, name=spec)


def _options(spec: str, rest: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"policy {spec!r}: option {item!r} is not key=value")
        options[key.strip()] = _parse_value(value.strip())
    return options


def _parse_value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)
