"""World profile schema: round trip, and bad input names the key path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from traces.world_profile import (
    ModelProfile,
    PairProfile,
    PassTimeTable,
    WorldProfile,
    WorldProfileError,
    load_world_profile,
    save_world_profile,
    world_profile_to_dict,
)


def small_profile() -> WorldProfile:
    table = PassTimeTable((1, 4), (1, 2, 8), ((0.01, 0.012, 0.02), (0.02, 0.025, 0.05)), 128)
    models = (ModelProfile("tiny", 1.0e8, table), ModelProfile("big", 1.0e9, table))
    pairs = (PairProfile(0, 1, 0.7, None, "greedy", (0.8, 0.7), (0.1, 0.3), 50),)
    return WorldProfile("cpu: test", models, pairs, {"seed": 0})


def test_round_trip_is_exact(tmp_path: Path) -> None:
    path = tmp_path / "profile.json"
    save_world_profile(small_profile(), path)
    assert load_world_profile(path) == small_profile()


def test_pair_lookup_falls_back_to_all_domains() -> None:
    profile = small_profile()
    pair = profile.pair(0, 1, "code")
    assert pair is not None and pair.domain is None
    assert profile.pair(0, 0) is None


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (
            lambda d: d["models"][1]["pass_time"]["seconds"][0].__setitem__(2, -1.0),
            "models[1].pass_time.seconds[0][2]",
        ),
        (
            lambda d: d["models"][0]["pass_time"].__setitem__("tokens", [2, 1, 8]),
            "models[0].pass_time.tokens",
        ),
        (lambda d: d["acceptance"][0].__setitem__("alpha", 1.5), "acceptance[0].alpha"),
        (lambda d: d["acceptance"][0].__setitem__("upper", 0), "acceptance[0].upper"),
        (lambda d: d["models"][0].pop("params"), "models[0].params"),
        (lambda d: d["models"][0].__setitem__("flops", 3), "models[0].flops"),
        (lambda d: d.__setitem__("version", 99), "version"),
    ],
)
def test_bad_input_names_file_and_key(tmp_path: Path, mutate, key: str) -> None:
    document = world_profile_to_dict(small_profile())
    mutate(document)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    with pytest.raises(WorldProfileError) as err:
        load_world_profile(path)
    assert str(path) in str(err.value) and key in str(err.value)


def test_invalid_json_reports_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n "schema": \n}')
    with pytest.raises(WorldProfileError, match="line 3"):
        load_world_profile(path)
