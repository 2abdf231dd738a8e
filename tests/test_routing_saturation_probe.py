"""SpecRouter's saturation probe (policies.specrouter_policy.SaturationProbe): under a backlog
it measures plain decoding against routing, holds plain decoding only while it commits more,
and re-measures ever more rarely."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from policies.specrouter_policy import PROBE_STEP, BacklogProbe, SaturationProbe, SpecRouter


class Tracker:
    """The LoadTracker attributes the probes read."""

    def __init__(self, in_flight: float = 250.0, most: int = 256) -> None:
        self.committed_total = 0
        self.rounds = 0
        self.in_flight = in_flight
        self.most_in_flight = most
        self.waiting = 0  # requests waiting for admission
        self.clock = 0.0
        self.demand_lead = 1.0  # offered over committed tokens per second (the demand is met)


def drive(
    probe: SaturationProbe | BacklogProbe,
    tracker: Tracker,
    steps: int,
    rate: Callable[[bool], float],
    every: int = PROBE_STEP,
) -> list[bool]:
    """``steps`` looks of the probe, one second and ``every`` rounds apart; the rounds of a step
    commit ``rate(plain)`` tokens per second under the state the probe was in.  Returns the
    state (plain or not) in each step."""
    states = []
    for _ in range(steps):
        plain = probe.plain
        states.append(plain)
        tracker.rounds += every
        tracker.committed_total += int(rate(plain))
        tracker.clock += 1.0
        probe.step(tracker, tracker.clock)  # type: ignore[arg-type]
    return states


def test_plain_decoding_that_commits_more_holds_while_the_backlog_lasts() -> None:
    probe, tracker = SaturationProbe(), Tracker()
    states = drive(probe, tracker, 400, lambda plain: 2000.0 if plain else 1000.0)
    assert probe.probes == 1 and probe.holds == 1 and probe.releases == 0
    assert probe.plain and sum(states) > 0.9 * len(states)
    tracker.in_flight = 100.0  # the backlog cleared: the planner routes again
    drive(probe, tracker, 8, lambda plain: 2000.0 if plain else 1000.0)
    assert not probe.plain


def test_a_hold_ends_when_plain_decoding_sustains_less_under_a_saturation_that_never_clears() -> None:
    """The sim_speed finding: the first probe held plain decoding until the backlog cleared,
    which under saturation never happens (1.7x slower than routing).  Here the probe window is
    lucky (a burst) and later plain windows commit 0.6x routing's rate."""
    windows = {"plain": 0}
    in_flight = Tracker().in_flight
    probe_rounds = (SaturationProbe.WARMUP_ROUNDS + SaturationProbe.PROBE_ROUNDS) * in_flight
    burst = -(-int(probe_rounds) // PROBE_STEP)  # looks of the first warm-up and probe

    def rate(plain: bool) -> float:
        if not plain:
            return 1000.0
        windows["plain"] += 1
        return 3000.0 if windows["plain"] <= burst else 600.0  # warm-up, probe: a burst

    probe, tracker = SaturationProbe(), Tracker()
    states = drive(probe, tracker, 3000 * 512 // PROBE_STEP, rate)  # 1.5e6 rounds, 770 routed windows
    assert probe.holds >= 1 and probe.releases >= 1 and not probe.plain
    assert sum(states) < 0.05 * len(states)
    old, tracker = BacklogProbe(), Tracker()  # the first version, on the same stream
    windows["plain"] = 0
    old_states = drive(old, tracker, 750, rate, every=2048)
    assert old.holds == 1 and all(old_states[-100:])


def test_probes_that_lose_come_ever_more_rarely() -> None:
    probe, tracker = SaturationProbe(), Tracker()
    states = drive(probe, tracker, 20000, lambda plain: 600.0 if plain else 1000.0)
    assert probe.holds == 0 and not probe.plain
    # gaps double from GAP_FIRST windows up to GAP_MAX: after the doublings, one probe per GAP_MAX
    windows = 20000 * PROBE_STEP // int(SaturationProbe.ROUTE_ROUNDS * tracker.in_flight)  # routed, 8 R each
    assert probe.gap == SaturationProbe.GAP_MAX
    assert 3 <= probe.probes <= 5 + windows // SaturationProbe.GAP_MAX
    assert sum(states) < 0.02 * len(states)


def test_no_probe_without_a_backlog() -> None:
    probe, tracker = SaturationProbe(), Tracker(in_flight=100.0, most=256)
    states = drive(probe, tracker, 500, lambda plain: 2000.0 if plain else 1000.0)
    assert probe.probes == 0 and not any(states)


def test_probe_windows_are_counted_in_rounds_per_request() -> None:
    """A plain round commits one token and a speculative one several: the warm-up and the probe
    last rounds per request in flight, so a deep backlog gets a long enough probe."""
    probe, tracker = SaturationProbe(), Tracker(in_flight=2000.0, most=2048)
    for _ in range(1000):
        drive(probe, tracker, 1, lambda plain: 1000.0)
        if probe.mode == "warmup":
            break
    assert probe.mode == "warmup"
    assert probe._until - tracker.rounds == SaturationProbe.WARMUP_ROUNDS * 2000
    while probe.mode == "warmup":
        drive(probe, tracker, 1, lambda plain: 1000.0)
    assert probe.mode == "probe" and probe._until - tracker.rounds == SaturationProbe.PROBE_ROUNDS * 2000


def test_specrouter_probe_modes() -> None:
    assert isinstance(SpecRouter()._backlog, SaturationProbe)
    assert isinstance(SpecRouter(probe="hold")._backlog, BacklogProbe)
    with pytest.raises(ValueError, match="probe"):
        SpecRouter(probe="sometimes")


def test_routed_windows_are_counted_in_rounds_per_request() -> None:
    """A backlog building from a few requests closes its routed windows after 8 rounds per request,
    not a fixed 2,048 rounds (20 s at 20 requests in flight on high_rate): the first probe comes
    while the backlog builds."""
    for in_flight in (20.0, 250.0, 2000.0):
        probe, tracker = SaturationProbe(), Tracker(in_flight=in_flight, most=int(in_flight))
        drive(probe, tracker, 1, lambda plain: 1000.0)
        assert probe.mode == "route"
        expected = max(int(SaturationProbe.ROUTE_ROUNDS * in_flight), PROBE_STEP)
        assert probe._until - tracker.rounds == expected
    small, tracker = SaturationProbe(), Tracker(in_flight=20.0, most=20)
    looks = 0
    while small.probes == 0 and looks < 100:
        drive(small, tracker, 1, lambda plain: 1000.0)
        looks += 1
    assert small.probes == 1 and tracker.rounds <= 4 * PROBE_STEP  # the old fixed windows: 2 x 2,048 rounds


def probe_after_growth(
    rejudge: float = SaturationProbe.REJUDGE_GROWTH, waiting: int = 0, lead: float = 1.0
) -> tuple[SaturationProbe, int]:
    """A backlog builds from 20 requests in flight, where plain decoding loses the first probe and
    the gap doubles; it then grows to 250, where plain decoding commits twice as much, with
    ``waiting`` requests without a slot and the admitted ones asking ``lead`` times the tokens per
    second the rounds commit.  Returns the probe and the looks it took to hold plain decoding."""
    probe, tracker = SaturationProbe(), Tracker(in_flight=20.0, most=20)
    probe.REJUDGE_GROWTH = rejudge
    tracker.demand_lead = lead

    def rate(plain: bool) -> float:  # plain decoding loses at 20 in flight, wins at 250
        return (2000.0 if plain else 1000.0) if tracker.in_flight > 100 else (600.0 if plain else 1000.0)

    while probe.probes == 0 or probe.mode != "route":
        drive(probe, tracker, 1, rate)
    assert probe.holds == 0 and probe.gap == 2 * SaturationProbe.GAP_FIRST
    tracker.in_flight, tracker.most_in_flight, tracker.waiting = 250.0, 256, waiting
    return probe, looks_until_held(probe, tracker, rate, 1)


def looks_until_held(
    probe: SaturationProbe, tracker: Tracker, rate: Callable[[bool], float], holds: int
) -> int:
    """Looks of the probe until it has held plain decoding ``holds`` times (at most 5,000)."""
    looks = 0
    while probe.holds < holds and looks < 5000:
        drive(probe, tracker, 1, rate)
        looks += 1
    return looks


def test_a_backlog_that_grew_is_probed_again_at_once() -> None:
    """high_rate seed 4 with pooled waits: the first probe came at 26 requests in flight while the
    backlog built (plain decoding lost there, rightly) and doubled the gap; the backlog then grew
    to the admission limit, where plain decoding commits ~45% more, and the next probe came
    ~200 s later.  A verdict holds for the load it was judged at: grown REJUDGE_GROWTH-fold, the
    backlog is probed again within a window."""

    probe, looks = probe_after_growth(waiting=40)
    window_looks = int(SaturationProbe.ROUTE_ROUNDS * 250) // PROBE_STEP + 1
    assert probe.holds == 1 and probe.plain and looks <= 4 * window_looks  # a routed window, warm-up, probe
    blind, blind_looks = probe_after_growth(float("inf"), waiting=40)  # the gap alone: 64 windows of 8 R
    assert blind.holds == 1 and blind_looks >= SaturationProbe.GAP_FIRST * window_looks
    # without an admission limit (nobody waits for a slot) a grown backlog waits for the gap
    unlimited, unlimited_looks = probe_after_growth(waiting=0)
    assert unlimited.holds == 1 and unlimited_looks >= SaturationProbe.GAP_FIRST * window_looks


def test_a_probe_lost_while_the_demand_led_is_judged_again_when_the_backlog_doubles() -> None:
    """high_rate seed 5: the first probe came at 23 requests in flight while arrivals ramped up
    (the admitted requests asked for 2x what the rounds committed), plain decoding lost, and the
    doubled gap let speculation run to the admission limit at 32 s.  A verdict taken while the
    demand led is provisional: the next doubling re-judges it with no admission limit in sight.
    One taken with the demand met waits for the gap (the saturated sim_speed workload, where
    re-judging every doubling cost 337 -> 401 ms)."""

    window_looks = int(SaturationProbe.ROUTE_ROUNDS * 250) // PROBE_STEP + 1
    ramp, ramp_looks = probe_after_growth(lead=2.0)
    assert ramp.holds == 1 and ramp_looks <= 4 * window_looks
    met, met_looks = probe_after_growth(lead=1.0)
    assert met.holds == 1 and met_looks >= SaturationProbe.GAP_FIRST * window_looks


def hold_released_then_grown(lead: float) -> tuple[SaturationProbe, int]:
    """Plain decoding wins a probe at 100 requests in flight and holds; its hold windows then
    commit 0.6x routing's rate (arrivals' prefills in a ramp) and the hold is released with the
    admitted requests asking ``lead`` times what the rounds commit; the backlog grows 1.5-fold,
    where plain decoding commits twice routing's rate.  Returns the probe and the looks from the
    release until plain decoding holds again."""
    probe, tracker = SaturationProbe(), Tracker(in_flight=100.0, most=100)
    tracker.demand_lead = lead
    phase = {"ramp": False}

    def rate(plain: bool) -> float:
        return (600.0 if phase["ramp"] else 2000.0) if plain else 1000.0

    while probe.holds == 0:
        drive(probe, tracker, 1, rate)
    phase["ramp"] = True
    while probe.releases == 0:
        drive(probe, tracker, 1, rate)
    phase["ramp"] = False
    tracker.in_flight, tracker.most_in_flight = 150.0, 150
    return probe, looks_until_held(probe, tracker, rate, 2)


def test_a_hold_released_while_the_demand_led_is_judged_again_at_half_a_doubling() -> None:
    """high_rate seed 0: a hold won at 101 in flight was released 0.7 s later (its windows carried
    the ramp's prefills) and the next probe came at the admission limit, 18 s on.  Released while
    the demand led, the verdict is provisional: a backlog grown sqrt(2)-fold is probed again at
    once.  Released with the demand met, it waits for the (doubled) gap."""
    window_looks = int(SaturationProbe.ROUTE_ROUNDS * 150) // PROBE_STEP + 1
    ramp, ramp_looks = hold_released_then_grown(lead=2.0)
    assert ramp.holds == 2 and ramp_looks <= 4 * window_looks
    met, met_looks = hold_released_then_grown(lead=1.0)
    assert met.holds == 2 and met_looks >= 2 * SaturationProbe.GAP_FIRST * window_looks


def test_a_won_probe_clears_a_provisional_verdict() -> None:
    """A provisional loss (the demand led) is judged again at sqrt(2) times its load; once plain
    decoding wins, the verdict is no transient, and a later backlog waits for the gap again."""
    probe, _ = probe_after_growth(lead=2.0)
    assert probe.holds == 1 and not probe._provisional
