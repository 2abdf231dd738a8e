"""Issue 13, real-backend rows: bad ladders, missing traces and unsafe checkpoints.

``run`` and ``profile`` on a missing ladder, tokenizers that disagree (in vocabulary, or only in
how they merge), a truncated ``.safetensors`` and a missing trace: one line naming the culprit,
exit status 2, before any model runs.  ``zoo build`` checkpoints are read without unpickling code.
"""

from __future__ import annotations

import string
from pathlib import Path

import pytest
import torch
from cli_helpers import error_line
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from backend.testing import save_tiny_ladder, tiny_tokenizer
from specrouter.cli import main


@pytest.fixture(scope="module")
def ladder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_ladder(tmp_path_factory.mktemp("ladder"), levels=3)


@pytest.fixture()
def trace(tmp_path: Path) -> Path:
    path = tmp_path / "trace.csv"
    path.write_text("arrival,prompt_tokens,output_tokens\n0.0,6,3\n0.1,5,2\n")
    return path


def copy_ladder(source: Path, target: Path) -> Path:
    for path in source.rglob("*"):
        if path.is_file():
            (target / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
            (target / path.relative_to(source)).write_bytes(path.read_bytes())
    return target


def bpe_tokenizer(merges: list[tuple[str, str]]) -> PreTrainedTokenizerFast:
    """Letters plus "ab" and "bc": the same vocabulary and special tokens whatever ``merges`` is."""
    vocab = {
        t: i for i, t in enumerate(["<unk>", "<s>", "</s>", "<pad>", *string.ascii_lowercase, "ab", "bc"])
    }
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def commands(ladder: Path, trace: Path, tmp_path: Path) -> list[list[str]]:
    run = ["run", "--ladder", str(ladder), "--trace", str(trace), "--out", str(tmp_path / "run")]
    return [
        [*run, "--replay", "fast"],
        ["profile", "--ladder", str(ladder), "--out", str(tmp_path / "p.json")],
    ]


def test_a_missing_ladder_is_one_line(
    tmp_path: Path, trace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-ladder"
    for argv in commands(missing, trace, tmp_path):
        assert main(argv) == 2
        assert f"{missing}: no ladder.json" in error_line(capsys)
    assert not (tmp_path / "run").exists() and not (tmp_path / "p.json").exists()


def test_tokenizers_with_different_vocabularies_are_refused(
    ladder: Path, tmp_path: Path, trace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = copy_ladder(ladder, tmp_path / "broken")
    tiny_tokenizer(vocab_size=48).save_pretrained(broken / "tiny1")
    for argv in commands(broken, trace, tmp_path):
        assert main(argv) == 2
        line = error_line(capsys)
        assert "'tiny0'" in line and "'tiny1'" in line and "vocabulary sizes differ" in line


def test_tokenizers_that_merge_differently_are_refused(
    ladder: Path, tmp_path: Path, trace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = copy_ladder(ladder, tmp_path / "merges")
    for name in ("tiny0", "tiny2"):
        bpe_tokenizer([("a", "b")]).save_pretrained(broken / name)
    bpe_tokenizer([("b", "c")]).save_pretrained(broken / "tiny1")  # same vocabulary, other merge
    for argv in commands(broken, trace, tmp_path):
        assert main(argv) == 2
        line = error_line(capsys)
        assert "'tiny0'" in line and "'tiny1'" in line and "probe text encodes to different ids" in line


def test_a_ladder_sharing_one_bpe_tokenizer_passes_the_probe(ladder: Path, tmp_path: Path) -> None:
    from backend.ladder import check_tokenizers, ladder_paths

    same = copy_ladder(ladder, tmp_path / "same")
    for name in ("tiny0", "tiny1", "tiny2"):
        bpe_tokenizer([("a", "b")]).save_pretrained(same / name)
    assert check_tokenizers(ladder_paths(same)) is not None


@pytest.mark.parametrize("keep", [4, 200, -100])
def test_a_truncated_safetensors_file_is_named(
    ladder: Path, tmp_path: Path, trace: Path, capsys: pytest.CaptureFixture[str], keep: int
) -> None:
    broken = copy_ladder(ladder, tmp_path / "cut")
    weights = broken / "tiny2" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:keep])
    for argv in commands(broken, trace, tmp_path):
        assert main(argv) == 2
        line = error_line(capsys)
        assert str(weights) in line and "safetensors" in line


def test_run_with_a_missing_trace_is_refused_before_loading_models(
    ladder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.csv"
    out = tmp_path / "run"
    assert main(["run", "--ladder", str(ladder), "--trace", str(missing), "--out", str(out)]) == 2
    assert f"{missing}: no such trace file" in error_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--limit", "0"], "--limit 0: expected a positive whole number"),
        (["--policy", "static:0>5:2"], "does not fit the 3-model ladder"),
        (["--policy", "specrouter:learn_waits=maybe"], "learn_waits='maybe': expected true or false"),
    ],
)
def test_run_refuses_bad_options_before_work(
    ladder: Path,
    tmp_path: Path,
    trace: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    expected: str,
) -> None:
    out = tmp_path / "run"
    assert main(["run", "--ladder", str(ladder), "--trace", str(trace), "--out", str(out), *extra]) == 2
    assert expected in error_line(capsys)
    assert not out.exists()


def test_zoo_checkpoints_are_loaded_without_running_pickled_code(tmp_path: Path) -> None:
    from backend.zoo.train import load_checkpoint

    marker = tmp_path / "pwned"

    class Planted:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (Path.touch, (marker,))  # type: ignore[return-value]

    planted = tmp_path / "target.pt"
    torch.save({"models": {}, "optimisers": {}, "step": 0, "payload": Planted()}, planted)
    assert not marker.exists()
    with pytest.raises(ValueError, match=f"{planted}: not a checkpoint this build wrote"):
        load_checkpoint(planted)
    assert not marker.exists()
    honest = tmp_path / "honest.pt"
    torch.save(
        {"models": {"m": {"w": torch.ones(2)}}, "optimisers": {}, "step": 3, "losses": {"m": [1.0]}}, honest
    )
    assert load_checkpoint(honest)["step"] == 3
