"""Routing policies and the contract they share with both worlds (pure Python)."""

from policies.bandit import ChainBandit
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
from policies.oracle import Oracle
from policies.planner import RoutePlanner
from policies.prior import RoutingPrior, load_prior, prior_from_profile
from policies.registry import make_policy
from policies.specrouter_policy import SpecRouter

__all__ = [
    "ChainBandit",
    "Oracle",
    "RoutePlanner",
    "RoutingPrior",
    "load_prior",
    "prior_from_profile",
    "SpecRouter",
    "make_policy",
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
