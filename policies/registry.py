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

Options (knobs) are checked against the policy's constructor before it is built: an unknown
name, a value of the wrong type (``time_rate=abc``, ``learn_waits=maybe``) or out of range
(``max_lookahead=0``) raises :class:`PolicySpecError` naming the knob and what it takes, so a
bad name fails at once instead of mid-run.  Booleans are ``true`` / ``false``; a list of
integers (``bandit:lookaheads=2/4/6``) is written with ``/``.  :func:`check_fits` then asks a
fresh policy for a first route on a ladder of a given size.
"""

from __future__ import annotations

import inspect
import math
import re
import typing
from collections.abc import Sequence
from typing import Any, NamedTuple

from policies.bandit import ChainBandit
from policies.baselines import DynamicLookahead, StaticChain, TargetOnly
from policies.contract import LadderInfo, Policy, RouteView, WorldTruth
from policies.cost_model import enumerate_chains
from policies.oracle import Oracle
from policies.prior import RoutingPrior
from policies.specrouter_policy import SpecRouter

POLICY_NAMES = ("target-only", "static", "dynamic-lookahead", "specrouter", "bandit", "bandit-ucb1", "oracle")
_ROUTE_LEVEL = re.compile(r"^M(\d+)\[(\d+)\]$")
# Constructor arguments that are not knobs: the display name and the oracle's world.
_NOT_KNOBS = frozenset({"self", "name", "world"})


class PolicySpecError(ValueError):
    """A policy name or knob that cannot make a policy; the message says what is expected."""


class KnobRange(NamedTuple):
    """Allowed values of a numeric knob: ``low <= v`` (``low < v`` when ``open_low``), ``v <= high``."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False

    def problem(self, value: float) -> str | None:
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return f"expected {'>' if self.open_low else '>='} {self.low:g}"
        if self.high is not None and value > self.high:
            return f"expected <= {self.high:g}"
        return None


_RATE = KnobRange(0.0, 1.0, open_low=True)  # an EMA rate: 0 would never learn, > 1 overshoots
# Ranges the constructors do not check themselves (some are only used, and fail, mid-run).
KNOB_RANGES: dict[str, KnobRange] = {
    "max_lookahead": KnobRange(1),
    "grid_rows": KnobRange(1),
    "drafter": KnobRange(0),
    "initial": KnobRange(1),
    "maximum": KnobRange(1),
    "time_rate": _RATE,
    "pair_rate": _RATE,
    "load_rate": _RATE,
    "stale_rate": _RATE,
    "hysteresis": KnobRange(0),
    "optimism": KnobRange(0),
    "surprise": KnobRange(0, open_low=True),
    "prior_strength": KnobRange(0, open_low=True),
    "similarity_weight": KnobRange(0, 1),
    "followups": KnobRange(0),
    "learn_every": KnobRange(1),
    "exploration": KnobRange(0),
    "gamma": KnobRange(0, 1, open_low=True),  # the bandit's discount
    "time_bucket": KnobRange(0, open_low=True),
}


def policy_head(spec: str) -> str:
    """``specrouter:hysteresis=0.1`` -> ``specrouter``: the registry name without its options."""
    return spec.strip().partition(":")[0]


def check_spec(spec: str, *, simulated: bool = True) -> None:
    """Refuse ``spec`` before any work: an unknown name, a bad knob, or (``simulated=False``) a
    policy that needs the simulated world's truth.  Builds a throw-away policy where it can."""
    head = policy_head(spec)
    if head not in POLICY_NAMES:
        raise PolicySpecError(f"unknown policy {spec!r}; known: {', '.join(POLICY_NAMES)}")
    if head != "oracle":
        make_policy(spec)
    elif simulated:
        resolve_knobs(spec)  # the oracle is built later, once the world's truth exists
    else:
        raise PolicySpecError(
            f"policy {spec!r} runs only in the simulator (it reads the world's true acceptance and "
            "latency); drop it from --policy on the real backend"
        )


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
    if head not in POLICY_NAMES:
        raise PolicySpecError(f"unknown policy {spec!r}; known: {', '.join(POLICY_NAMES)}")
    if head == "oracle" and world is None:
        raise PolicySpecError(f"policy {spec!r} needs the world's truth: it runs in the simulator only")
    cls, knobs = _POLICY_CLASSES[head], resolve_knobs(spec, **params)
    try:
        if head == "oracle":
            return cls(world, **knobs)
        name = {"name": spec} if rest and head != "dynamic-lookahead" else {}
        return cls(**knobs, **name)
    except (ValueError, TypeError) as error:  # the constructor's own checks
        raise PolicySpecError(f"policy {spec!r}: {error}") from None


def resolve_knobs(spec: str, **params: Any) -> dict[str, Any]:
    """The knobs ``spec`` (and ``params`` over it) sets, checked and converted to their types.

    Raises :class:`PolicySpecError` naming the knob for an unknown name, a wrong type or a
    value out of range.  Does not build the policy.
    """
    head, _, rest = spec.strip().partition(":")
    if head not in _POLICY_CLASSES:
        return {}
    if head == "dynamic-lookahead":
        if rest.strip() and not re.fullmatch(r"-?\d+", rest.strip()):
            raise PolicySpecError(f"policy {spec!r}: drafter must be a ladder index, got {rest!r}")
        given: dict[str, Any] = {"drafter": rest.strip()} if rest.strip() else {}
    else:
        given = _options(spec, rest)
    given.update(params)
    if head == "bandit-ucb1":
        given["gamma"] = 1.0
    signature = knob_signature(_POLICY_CLASSES[head])
    return {key: _checked_knob(spec, key, value, signature) for key, value in given.items()}


def policy_knobs(spec: str, **params: Any) -> dict[str, Any]:
    """Every knob of ``spec``'s policy with the value it runs with (defaults filled in): run.json."""
    head, _, rest = spec.strip().partition(":")
    if head == "static":
        chain, lookaheads = _static_route(spec, rest)
        return {"chain": list(chain), "lookaheads": list(lookaheads)}
    if head not in _POLICY_CLASSES:
        return {}
    defaults = {key: default for key, (_, default) in knob_signature(_POLICY_CLASSES[head]).items()}
    resolved = {**defaults, **resolve_knobs(spec, **params)}
    return {key: _recorded(value) for key, value in resolved.items()}


def _recorded(value: Any) -> Any:
    """A knob's value as run.json records it (a warm-start prior by its source file)."""
    if isinstance(value, RoutingPrior):
        return value.source
    return list(value) if isinstance(value, tuple) else value


def knob_signature(cls: type) -> dict[str, tuple[Any, Any]]:
    """``knob -> (type, default)`` of a policy class's constructor (``name`` / ``world`` left out)."""
    hints = typing.get_type_hints(cls.__init__)  # type: ignore[misc]  # the class's own constructor
    return {
        key: (hints.get(key, Any), parameter.default)
        for key, parameter in inspect.signature(cls).parameters.items()
        if key not in _NOT_KNOBS
    }


def knob_kinds(spec: str) -> dict[str, Any]:
    """``knob -> annotated type`` of ``spec``'s policy (empty for target-only and static chains)."""
    head = spec.strip().partition(":")[0]
    if head not in _POLICY_CLASSES:
        return {}
    return {key: kind for key, (kind, _) in knob_signature(_POLICY_CLASSES[head]).items()}


def check_search_range(spec: str, name: str, low: float, high: float, integer: bool) -> None:
    """Refuse a search range over ``name`` that no trial of ``spec`` could run with.

    The knob must exist and be numeric (an integer knob searched as integers), and both ends
    must be values the policy accepts, so a bad ``--knob`` fails before the first trial.
    """
    kinds = knob_kinds(spec)
    where = f"--knob {name}={low:g}:{high:g}"
    if name not in kinds:
        known = ", ".join(k for k, kind in kinds.items() if kind in (int, float)) or "none"
        raise PolicySpecError(f"{where}: policy {spec!r} has no knob {name!r}; its numeric knobs: {known}")
    kind = kinds[name]
    if kind not in (int, float):
        raise PolicySpecError(f"{where}: knob {name!r} is not numeric ({getattr(kind, '__name__', kind)})")
    if kind is int and not integer:
        raise PolicySpecError(f"{where}: knob {name!r} takes integers; add :int ({where}:int)")
    # Each end alone, against the knob's type and range; constraints between knobs (initial <=
    # maximum) depend on the other knobs' draws and are left to the trial.
    for end in (low, high):
        try:
            resolve_knobs(spec, **{name: int(end) if integer else end})
        except PolicySpecError as error:
            raise PolicySpecError(f"{where}: {error}") from None


def check_fits(spec: str, ladder_size: int, names: Sequence[str] | None = None) -> None:
    """Refuse ``spec`` unless a fresh policy routes a first round on a ``ladder_size``-model ladder.

    The oracle (which needs the world) is not asked; ``make_policy`` already refused a bad knob.
    A warm-start prior (``specrouter:prior=PATH``) is checked against the ladder's ``names``
    when they are given (before the weights load only the size is known).
    """
    if spec.strip().partition(":")[0] == "oracle":
        return
    ladder = LadderInfo(tuple(names) if names is not None else tuple(f"M{i}" for i in range(ladder_size)))
    idle = (0,) * ladder_size
    try:
        policy = make_policy(spec)
        if names is None and isinstance(policy, SpecRouter):
            policy.prior = None
        policy.route(RouteView(0, 1, 0, 1, None, 0.0, ladder, idle, idle))
    except PolicySpecError:
        raise
    except (ValueError, IndexError) as error:
        raise PolicySpecError(
            f"policy {spec!r} does not fit the {ladder_size}-model ladder (M0..M{ladder_size - 1}, "
            f"target M{ladder_size - 1}): {error}"
        ) from None


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
    chain, lookaheads = _static_route(spec, rest)
    try:
        return StaticChain(chain, lookaheads, name=spec)
    except ValueError as error:  # Route's checks: increasing indices, one lookahead per drafter
        raise PolicySpecError(f"policy {spec!r}: {error}") from None


def _static_route(spec: str, rest: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``0>2>3:4,1`` or ``M0[4]>M2[1]>M3`` -> ``((0, 2, 3), (4, 1))``."""
    if rest.startswith("M"):  # the way a Route prints: M0[4]>M2[1]>M3
        *levels, last = rest.split(">")
        matches = [_ROUTE_LEVEL.match(level) for level in levels]
        if all(matches) and re.fullmatch(r"M\d+", last):
            chain = tuple(int(m.group(1)) for m in matches if m) + (int(last[1:]),)
            return chain, tuple(int(m.group(2)) for m in matches if m)
        raise PolicySpecError(f"policy {spec!r}: expected static:M0[4]>M2[1]>M3 or static:0>2>3:4,1")
    chain_text, _, lookahead_text = rest.partition(":")
    try:
        chain = tuple(int(x) for x in chain_text.split(">"))
        lookaheads = tuple(int(x) for x in lookahead_text.split(",")) if lookahead_text else ()
    except ValueError:
        raise PolicySpecError(
            f"policy {spec!r}: expected static:<i>j>...>target>:<lookaheads>, e.g. static:0>2>3:4,1"
        ) from None
    return chain, lookaheads


def _options(spec: str, rest: str) -> dict[str, Any]:
    """``k=v,k=v`` -> ``{k: "v"}`` (text; :func:`_checked_knob` converts it to the knob's type)."""
    options: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise PolicySpecError(f"policy {spec!r}: option {item!r} is not key=value")
        options[key.strip()] = value.strip()
    return options


def _checked_knob(spec: str, key: str, value: Any, signature: dict[str, tuple[Any, Any]]) -> Any:
    if key not in signature:
        raise PolicySpecError(
            f"policy {spec!r}: unknown knob {key!r} (unexpected keyword argument {key!r}); "
            f"its knobs are {', '.join(signature)}"
        )
    kind = signature[key][0]
    try:
        converted = _convert(value, kind)
    except ValueError as error:
        raise PolicySpecError(f"policy {spec!r}: knob {key}={value!r}: {error}") from None
    limits = KNOB_RANGES.get(key)
    problem = limits.problem(converted) if limits and isinstance(converted, int | float) else None
    if problem:
        raise PolicySpecError(f"policy {spec!r}: knob {key}={value!r} is out of range; {problem}")
    return converted


def _convert(value: Any, kind: Any) -> Any:
    """``value`` (text from a name, or a Python value from ``params``) as the annotated ``kind``."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text not in ("true", "false"):
            raise ValueError("expected true or false")
        return text == "true"
    if kind is int:
        number = _number(value, "an integer")
        if not float(number).is_integer():
            raise ValueError("expected an integer")
        return int(number)
    if kind is float:
        return float(_number(value, "a number"))
    if kind is str:
        if not isinstance(value, str):
            raise ValueError("expected text")
        return value
    if typing.get_origin(kind) in (Sequence, list, tuple):
        items = value.split("/") if isinstance(value, str) else value
        if not isinstance(items, Sequence) or not items:
            raise ValueError("expected integers separated by '/', e.g. 2/4/6")
        return tuple(_convert(item, int) for item in items)
    return value  # a type the command line cannot spell: passed through for the constructor to judge


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected {what}, not {value}")
    if isinstance(value, int | float):
        number = float(value)
    else:
        try:
            number = float(str(value).strip())
        except ValueError:
            raise ValueError(f"expected {what}") from None
    if not math.isfinite(number):
        raise ValueError(f"expected a finite {what.removeprefix('an ').removeprefix('a ')}")
    return int(number) if number.is_integer() and not isinstance(value, float) else number


_POLICY_CLASSES: dict[str, type] = {
    "dynamic-lookahead": DynamicLookahead,
    "specrouter": SpecRouter,
    "bandit": ChainBandit,
    "bandit-ucb1": ChainBandit,
    "oracle": Oracle,
}
