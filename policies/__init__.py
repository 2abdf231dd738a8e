"""Routing policies and the contract they share with both worlds (pure Python)."""

from policies.baselines import DynamicLookahead, StaticChain, TargetOnly
from policies.contract import (
    LadderInfo,
    LevelFeedback,
    PairTV,
    PassTiming,
    Policy,
    RoundFeedback,
    Route,
    RouteView,
)
from policies.cost_model import enumerate_chains, enumerate_routes, estimate_round, t_eff

__all__ = [
    "DynamicLookahead",
    "LadderInfo",
    "LevelFeedback",
    "PairTV",
    "PassTiming",
    "Policy",
    "RoundFeedback",
    "Route",
    "RouteView",
    "StaticChain",
    "TargetOnly",
    "enumerate_chains",
    "enumerate_routes",
    "estimate_round",
    "t_eff",
]
