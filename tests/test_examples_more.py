"""The examples beyond the quickstart, each run with CPU-sized settings: an HF fine-tuning script
whose only change is the import (it also runs, unchanged otherwise, on transformers.Trainer), a
custom compute_loss subclass, the command-line sweep with a preset, parquet through Ray Data on two
workers, and the notebook, executed by a real Jupyter kernel."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
sys.path.insert(0, EXAMPLES)


def load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hf_finetune_script_learns_and_runs_unchanged_on_transformers(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("datasets")
    import hf_finetune

    metrics = hf_finetune.main(["--output_dir", str(tmp_path / "ours"), "--disable_tqdm", "true"])
    assert metrics["eval_accuracy"] >= 0.95  # chance is 0.5
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(os.listdir(tmp_path / "ours"))

    with open(os.path.join(EXAMPLES, "hf_finetune.py")) as f:
        source = f.read()
    ours = "from raytrainer import HfArgumentParser, Trainer, TrainingArguments"
    assert source.count("raytrainer import") == 1 and ours in source  # the one raytrainer line
    swapped = tmp_path / "hf_finetune_on_transformers.py"
    swapped.write_text(source.replace(ours, "from transformers import HfArgumentParser, Trainer, TrainingArguments"))
    theirs = load_module(str(swapped), "hf_finetune_on_transformers").main(
        ["--output_dir", str(tmp_path / "theirs"), "--disable_tqdm", "true"])
    assert theirs["eval_accuracy"] >= 0.95
    assert max(theirs["eval_loss"], metrics["eval_loss"]) < 0.69  # both below chance (ln 2)


def test_custom_loss_subclass_is_the_loss_trained_and_evaluated(tmp_path):
    pytest.importorskip("sklearn")
    import custom_loss

    trainer, metrics = custom_loss.main(["--output_dir", str(tmp_path), "--num_train_epochs", "2",
                                         "--disable_tqdm", "true"])
    dev = trainer.eval_dataset
    weights = trainer.class_weights
    assert weights[1] > 4 * weights[0]  # a zero is one digit in ten
    with torch.no_grad():  # the whole dev set is one evaluation batch: eval_loss is exactly this
        logits = trainer.model(pixels=dev.images)["logits"]
        expected = F.cross_entropy(logits, dev.labels, weight=weights).item()
    assert metrics["eval_loss"] == pytest.approx(expected, rel=1e-5)
    assert metrics["eval_loss"] != pytest.approx(F.cross_entropy(logits, dev.labels).item(), rel=1e-3)
    assert metrics["eval_recall_zero"] >= 0.9


@pytest.mark.slow
def test_sweep_script_runs_the_preset_from_the_command_line(tmp_path):
    pytest.importorskip("sklearn")
    env = {**os.environ, "N_TRIALS": "2", "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    done = subprocess.run(["bash", os.path.join(EXAMPLES, "sweep.sh"), "--output_dir", str(tmp_path),
                           "--sampler-seed", "0"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    trials = json.load(open(tmp_path / "hp_search_results.json"))["trials"]
    assert [t["status"] for t in trials] == ["complete", "complete"]
    assert {"learning_rate", "adam_beta2", "lr_scheduler_type"} <= set(trials[0]["hyperparameters"])  # from_scratch
    best = max(trials, key=lambda t: t["objective"][0])
    assert best["objective"][0] > 0.5  # ten classes: chance is 0.1
    assert f"best trial {best['run_id']}: objective {best['objective'][0]}" in done.stdout


@pytest.mark.slow
def test_parquet_folder_through_ray_data_on_two_workers(tmp_path):
    pytest.importorskip("sklearn")
    import ray

    import parquet_ray_data

    from raytrainer import StreamingDataset
    from raytrainer.cli.build import build_trainer
    from raytrainer.cli.config import load_config
    from raytrainer.runtime.ray_session import local_instance_runtime_env

    # the instance the example would start, but never another cluster of this machine
    tests = os.path.dirname(os.path.abspath(__file__))
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env=local_instance_runtime_env([EXAMPLES, tests, os.path.dirname(tests)], dashboard=False))

    data = tmp_path / "data"
    config = tmp_path / "parquet.yaml"  # the same folders from a config file
    config.write_text(f"model: digits_task:build_model\ntrain_dataset: {{path: {data / 'train'}, shuffle: true}}\n"
                      f"eval_dataset: {data / 'dev'}\nargs: {{output_dir: {tmp_path / 'cli'}, report_to: none}}\n")
    try:
        # one pass over the training stream and one over the dev stream: each pass of a Ray Data
        # stream costs seconds of start-up on 2 CPUs
        result, metrics = parquet_ray_data.main(["--data_dir", str(data), "--output_dir", str(tmp_path / "out"),
                                                 "--num_train_epochs", "1", "--eval_strategy", "no",
                                                 "--disable_tqdm", "true"])
        trainer = build_trainer(load_config(str(config)), [], "raytrainer train")
        # read while Ray runs: counting a stream's rows would start Ray again after the shutdown
        streams = (trainer.train_dataset, trainer.train_dataset.num_rows, trainer.eval_dataset.num_rows)
    finally:
        ray.shutdown()
    assert len(os.listdir(data / "train")) == 4
    assert result.global_step == 23  # 1437 rows: 718 per worker, 23 batches of 32 (the last one short)
    assert os.path.isdir(tmp_path / "out" / "checkpoint-23")
    assert metrics["eval_accuracy"] > 0.6
    assert isinstance(streams[0], StreamingDataset) and streams[0].shuffle and streams[1:] == (1437, 360)
    assert not ray.is_initialized()


@pytest.mark.slow
def test_notebook_trains_evaluates_sweeps_and_plots_in_a_real_kernel(tmp_path):
    pytest.importorskip("sklearn")
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    for name in ("notebook.ipynb", "quickstart.py"):
        shutil.copy(os.path.join(EXAMPLES, name), tmp_path)
    notebook = nbformat.read(str(tmp_path / "notebook.ipynb"), as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")  # stored clean
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]

    def outputs(cell, kind):
        return [out for out in cell.outputs if kind in out.get("data", {}) or out.get("name") == kind]

    (table,) = outputs(code[1], "text/html")  # the live table, updated in place while training
    markup = table["data"]["text/html"]
    assert "<progress" in markup and markup.count("<tr>") >= 4  # header + one row per epoch
    assert code[1].outputs[-1]["data"]["text/plain"] == "120"  # global steps: 3 epochs of 40
    printed = "".join(out["text"] for out in outputs(code[2], "stdout"))
    dev_accuracy, test_accuracy = (float(word.rstrip(",")) for word in printed.split() if word[0].isdigit())
    assert dev_accuracy > 0.85 and test_accuracy > 0.85
    printed = "".join(out["text"] for out in outputs(code[3], "stdout"))
    assert printed.startswith("best trial ") and "out/notebook-sweep/run-" in printed
    assert outputs(code[4], "image/png")  # the plot of the trials
    assert os.path.isfile(tmp_path / "out" / "notebook-sweep" / "hp_search_results.json")
