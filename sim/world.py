"""A simulated world: cluster + scenario -> latency model, acceptance model and the truth.

:class:`World` is what a :class:`sim.engine.Simulation` runs in, and its :attr:`truth`
implements :class:`policies.contract.WorldTruth` for the oracle policy: the *current*
expected acceptance and pass time (slowdowns and drift included, noise excluded).
"""

from __future__ import annotations

from sim.acceptance import AcceptanceModel, LookupSpec
from sim.config import ClusterConfig, ConfigError
from sim.latency import LatencyModel, random_slowdowns
from sim.scenario import Scenario
from traces.world_profile import WorldProfile, load_world_profile


class SimTruth:
    """``WorldTruth`` of a world: what an all-knowing router would plan with."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.context = world.scenario.truth_context

    def alpha(self, lower: int, upper: int, domain: str | None, now: float) -> float:
        return self.world.acceptance.alpha(lower, upper, domain, now)

    def pass_time(self, model: int, tokens: int, batch_size: int, now: float) -> float:
        """Expected pass time with ``batch_size`` sequences each feeding ``tokens`` positions."""
        batch = max(1, batch_size)
        total = tokens * batch
        context = self.context * batch
        attention = total * (self.context + tokens)
        return self.world.latency.expected(model, total, batch, context, attention, now)


class World:
    """Everything about the simulated system except the workload and the policy."""

    def __init__(self, cluster: ClusterConfig, scenario: Scenario | None = None) -> None:
        scenario = scenario or Scenario()
        self.cluster = cluster
        self.scenario = scenario
        self.profile: WorldProfile | None = load_world_profile(cluster.profile) if cluster.profile else None
        if scenario.acceptance_mode == "empirical" and self.profile is None:
            raise ConfigError("scenario.acceptance_mode: 'empirical' needs a cluster with a world profile")
        slowdowns = list(scenario.slowdowns)
        if scenario.random_slowdowns:
            spec = scenario.random_slowdowns
            slowdowns += random_slowdowns(
                sorted(cluster.gpus),
                horizon=spec.get("horizon_s", 3600.0),
                rate_per_hour=spec.get("rate_per_hour", 1.0),
                factor=spec.get("factor", 2.0),
                duration=spec.get("duration_s", 60.0),
                seed=scenario.seed + 1,
            )
        for index, episode in enumerate(slowdowns):
            if episode.gpu not in cluster.gpus:
                raise ConfigError(
                    f"scenario.slowdowns[{index}].gpu: unknown GPU {episode.gpu!r} "
                    f"(cluster {cluster.name!r} has {', '.join(cluster.gpus)})"
                )
        self.slowdowns = tuple(slowdowns)
        self.latency = LatencyModel(
            cluster, self.profile, scenario.noise_sigma, self.slowdowns, seed=scenario.seed + 2
        )
        for lower, upper in scenario.alpha:
            if not 0 <= lower < upper < len(cluster.models):
                raise ConfigError(
                    f"scenario.alpha.{lower}>{upper}: not a pair of this {len(cluster.models)}-model ladder"
                )
        self.acceptance = AcceptanceModel(
            [m.params for m in cluster.models],
            scenario.alpha,
            correlation=scenario.correlation,
            domains=scenario.domains,
            drift_amplitude=scenario.drift_amplitude,
            drift_period=scenario.drift_period,
            overrides=scenario.acceptance_overrides,
            profile=self.profile if scenario.acceptance_mode == "empirical" else None,
            seed=scenario.seed,
            lookups=self._lookups(),
        )
        self.truth = SimTruth(self)

    def _lookups(self) -> dict[int, LookupSpec]:
        """The model-free members: their config's rates, the profile's measurements where it has them."""
        cluster, profile = self.cluster, self.profile
        if profile is not None and profile.model_free != cluster.model_free:
            raise ConfigError(
                f"cluster {cluster.name!r}: model-free members {list(cluster.model_free)} but its world "
                f"profile {cluster.profile} has {list(profile.model_free)} ({', '.join(profile.names)})"
            )
        lookups = {}
        for member in cluster.model_free:
            spec = cluster.models[member]
            measured_here = profile is not None and any(p.member == member for p in profile.proposals)
            if not spec.propose and not measured_here:
                raise ConfigError(
                    f"{cluster.name}.models[{member}].propose: the world profile {cluster.profile} has no "
                    f"proposal statistics for model-free member {member} (profile the ladder with its "
                    "lookup, e.g. `specrouter profile --ngram 2:4`), and the config gives none"
                )
            lookups[member] = LookupSpec(spec.propose, spec.accept, profile)
        return lookups
