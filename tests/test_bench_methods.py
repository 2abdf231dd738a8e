"""bench/backend_speed.py's measurement: a learning policy is cold in every repeat."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import backend_speed  # noqa: E402

from policies import Policy, TargetOnly  # noqa: E402


def test_learning_method_gets_a_fresh_policy_each_repeat_shared_over_its_items() -> None:
    built: list[Policy] = []
    seen: list[tuple[int, Policy]] = []

    def make() -> Policy:
        built.append(TargetOnly())
        return built[-1]

    def run(prompts: list[list[int]], policy: Policy) -> list[list[int]]:
        seen.append((prompts[0][0], policy))
        return [[7]]

    method = backend_speed.Method("learner", run, fresh=make)
    backend_speed.measure_all([method], [[10], [11]], repeats=3, label="test")
    assert len(built) == 3  # one cold policy per repeat
    assert [prompt for prompt, _ in seen] == [10, 11] * 3
    for repeat in range(3):  # the repeat's items in order share it: one job
        first, second = seen[2 * repeat][1], seen[2 * repeat + 1][1]
        assert first is second is built[repeat]
    assert method.tokens == 2 and len(method.times) == 2


def test_fixed_method_runs_without_a_policy_argument() -> None:
    calls: list[list[list[int]]] = []

    def run(prompts: list[list[int]]) -> list[list[int]]:
        calls.append(prompts)
        return [[1, 2]]

    method = backend_speed.Method("fixed", run)
    backend_speed.measure_all([method], [[1, 2, 3]], repeats=2, label="test", split=False)
    assert calls == [[[1, 2, 3]], [[1, 2, 3]]] and method.tokens == 2
