"""The README's main job (examples/quickstart.py) runs and learns."""

import os
import sys

import pytest

pytest.importorskip("sklearn")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples"))

import quickstart  # noqa: E402


def test_quickstart_trains_evaluates_predicts_and_sweeps(tmp_path, capsys):
    out = str(tmp_path / "qs")
    metrics = quickstart.main(["--output_dir", out, "--num_train_epochs", "2", "--disable_tqdm", "true"])
    assert metrics["test_accuracy"] > 0.8  # ten digit classes: chance is 0.1
    assert {"model.safetensors", "training_args.json"} <= set(os.listdir(out))
    assert any(name.startswith("checkpoint-") for name in os.listdir(out))
    printed = capsys.readouterr().out
    assert "sweep: best learning_rate" in printed
    assert os.path.exists(os.path.join(out, "sweep", "hp_search_results.csv"))


def test_quickstart_gives_the_same_numbers_every_time(tmp_path, capsys):
    argv = ["--num_train_epochs", "1", "--disable_tqdm", "true"]
    first = quickstart.main(["--output_dir", str(tmp_path / "a")] + argv)
    second = quickstart.main(["--output_dir", str(tmp_path / "b")] + argv)
    printed = capsys.readouterr().out
    sweeps = [line.split(" (trials in")[0] for line in printed.splitlines() if line.startswith("sweep: best")]
    assert first["test_accuracy"] == second["test_accuracy"] and first["test_loss"] == second["test_loss"]
    assert len(sweeps) == 2 and sweeps[0] == sweeps[1]
