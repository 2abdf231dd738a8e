from __future__ import annotations

from policies import DynamicLookahead, LadderInfo, RouteView, TargetOnly
from policies.contract import LevelFeedback, RoundFeedback

LADDER = LadderInfo(("draft", "mid", "target"))


def view(rid: int = 1) -> RouteView:
    return RouteView(rid, 10, 0, 100, None, 0.0, LADDER, (1, 1, 1), (0, 0, 0))


def feedback(policy, rid: int, accepted: int, done: bool = False) -> RoundFeedback:
    route = policy.route(view(rid))
    gamma = route.lookaheads[0]
    levels = (
        LevelFeedback(route.chain[0], 0, 0, gamma, ()),
        LevelFeedback(route.chain[1], gamma, accepted, accepted + 1, ()),
    )
    return RoundFeedback(rid, None, route, 0.0, 1.0, levels, (), done)


def test_target_only_routes_to_the_target() -> None:
    route = TargetOnly().route(view())
    assert route.chain == (2,) and route.lookaheads == ()


def test_dynamic_lookahead_follows_the_hugging_face_heuristic() -> None:
    policy = DynamicLookahead(drafter=0, initial=5)
    assert policy.route(view()).lookaheads == (5,)
    policy.observe(feedback(policy, 1, accepted=5))  # all accepted: +2
    assert policy.route(view()).lookaheads == (7,)
    policy.observe(feedback(policy, 1, accepted=3))  # a rejection: -1
    assert policy.route(view()).lookaheads == (6,)
    for _ in range(10):
        policy.observe(feedback(policy, 1, accepted=0))
    assert policy.route(view()).lookaheads == (1,)  # floor 1
    assert policy.route(view(rid=2)).lookaheads == (5,)  # state is per request
    policy.observe(feedback(policy, 1, accepted=0, done=True))
    assert policy.lookahead(1) == 5  # finished requests are forgotten
