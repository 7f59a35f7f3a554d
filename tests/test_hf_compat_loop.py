"""Loop behaviours the spec documents: evaluation of unsized streams, schedulers stepped with the
evaluation metric (given through ``optimizers=`` or the v5 ``greedy`` type), the log_level="info"
run summary, the resumed-run argument check and ``skip_memory_metrics=False``. Compared with
transformers where it is installed."""

import logging
import os
import random

import numpy as np
import pytest
import torch
from _hf_models import transformers_log_messages
from conftest import RegressionDataset, RegressionModel

import raytrainer
from raytrainer import Trainer
from raytrainer.greedy_lr import GreedyLR


class Stream(torch.utils.data.IterableDataset):
    """The rows of a RegressionDataset, as a stream without __len__."""

    def __init__(self, length: int = 20):
        self.rows = RegressionDataset(length)

    def __iter__(self):
        return (self.rows[i] for i in range(len(self.rows)))


def _libraries():
    try:
        import transformers
    except ImportError:
        return [raytrainer]
    return [raytrainer, transformers]


# --------------------------------------------------------------------------- evaluation of a stream

@pytest.mark.parametrize("library", _libraries(), ids=lambda m: m.__name__)
def test_evaluate_and_predict_on_a_stream_without_length(tmp_path, library):
    torch.manual_seed(0)
    model = RegressionModel()
    args = library.TrainingArguments(output_dir=str(tmp_path), report_to="none", disable_tqdm=True,
                                     per_device_eval_batch_size=8)
    trainer = library.Trainer(model=model, args=args)
    with pytest.raises(TypeError):
        len(Stream())
    streamed, sized = trainer.evaluate(Stream()), trainer.evaluate(RegressionDataset(20))
    assert streamed["eval_loss"] == pytest.approx(sized["eval_loss"], rel=1e-6)
    prediction = trainer.predict(Stream())
    expected = model(RegressionDataset(20).x)["logits"].detach().numpy()
    np.testing.assert_allclose(prediction.predictions, expected, rtol=1e-6)
    assert prediction.metrics["test_loss"] == pytest.approx(sized["eval_loss"], rel=1e-6)


def test_batch_eval_metrics_on_a_stream_know_the_last_batch(make_args):
    calls = []

    def metrics(prediction, compute_result):
        calls.append((len(prediction.predictions), compute_result))
        return {"batches": len(calls)} if compute_result else {}

    trainer = Trainer(model=RegressionModel(), args=make_args(per_device_eval_batch_size=8, batch_eval_metrics=True),
                      compute_metrics=metrics)
    result = trainer.evaluate(Stream(20))
    assert calls == [(8, False), (8, False), (4, True)] and result["eval_batches"] == 3


# --------------------------------------------------------------------------- metric-driven schedulers

SCORES = [1.0, 1.0, 1.0, 0.5, 0.5, 0.5]


def _plateau_run(library, tmp_path, make_scheduler):
    torch.manual_seed(0)
    model = RegressionModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scores = iter(SCORES)
    args = library.TrainingArguments(
        output_dir=str(tmp_path / library.__name__), report_to="none", disable_tqdm=True, save_strategy="no",
        max_steps=6, eval_strategy="steps", eval_steps=1, logging_steps=1, metric_for_best_model="score",
        per_device_train_batch_size=4)
    trainer = library.Trainer(model=model, args=args, train_dataset=RegressionDataset(16),
                              eval_dataset=RegressionDataset(4), compute_metrics=lambda p: {"score": next(scores)},
                              optimizers=(optimizer, make_scheduler(optimizer)))
    trainer.train()
    return [entry["learning_rate"] for entry in trainer.state.log_history if "learning_rate" in entry]


@pytest.mark.parametrize("library", _libraries(), ids=lambda m: m.__name__)
def test_plateau_scheduler_given_through_optimizers_steps_with_the_metric(tmp_path, library):
    rates = _plateau_run(library, tmp_path, lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5,
                                                                                                   patience=0))
    # the reference: the same scheduler fed the same scores, one per evaluation (after each step)
    reference = torch.optim.lr_scheduler.ReduceLROnPlateau(torch.optim.SGD([torch.zeros(1)], lr=0.1), factor=0.5,
                                                           patience=0)
    expected = []
    for score in SCORES:
        expected.append(reference.optimizer.param_groups[0]["lr"])
        reference.step(score)
    assert rates == pytest.approx(expected) and rates == pytest.approx([0.1, 0.1, 0.05, 0.025, 0.025, 0.0125])


def test_plateau_scheduler_without_evaluation_is_refused(make_args):
    model = RegressionModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="optimizers\\[1\\] is a ReduceLROnPlateau, which steps on an evaluation "
                                         "metric, but eval_strategy='no'"):
        Trainer(model=model, args=make_args(), optimizers=(optimizer,
                torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)))


@pytest.mark.parametrize("library", _libraries(), ids=lambda m: m.__name__)
def test_greedy_scheduler_type(tmp_path, library):
    scores = iter([1.0, 0.9, 0.8, 0.8, 0.8, 0.7, 0.6, 0.5])
    args = library.TrainingArguments(
        output_dir=str(tmp_path / library.__name__), report_to="none", disable_tqdm=True, save_strategy="no",
        max_steps=8, eval_strategy="steps", eval_steps=1, logging_steps=1, learning_rate=0.1,
        lr_scheduler_type="greedy", lr_scheduler_kwargs={"patience": 1, "factor": 0.5, "min_lr": 0.01},
        metric_for_best_model="score", per_device_train_batch_size=4, optim="sgd")
    trainer = library.Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(16),
                              eval_dataset=RegressionDataset(4), compute_metrics=lambda p: {"score": next(scores)})
    trainer.train()
    rates = [entry["learning_rate"] for entry in trainer.state.log_history if "learning_rate" in entry]
    # two improvements in a row (more than patience=1) double the rate, two evaluations without one halve it:
    # 1.0 0.9 -> x2 | 0.8 0.8 0.8 -> /2 | 0.7 0.6 -> x2 (each rate is logged at the step after its evaluation)
    assert rates == pytest.approx([0.1, 0.1, 0.2, 0.2, 0.2, 0.1, 0.1, 0.2])


def _hf_greedy():
    transformers = pytest.importorskip("transformers")
    return transformers.optimization.GreedyLR


@pytest.mark.parametrize("settings", [
    dict(patience=2, factor=0.7),
    dict(patience=1, factor=0.5, threshold=0.05, threshold_mode="rel", cooldown=2, warmup=1),
    dict(patience=0, factor=0.9, mode="max", min_lr=[0.01, 0.02], max_lr=0.5, reset_start=3),
    dict(patience=3, factor=0.8, smooth=True, window_size=4, min_lr=0.05, reset_start=2),
])
def test_greedy_lr_matches_transformers_step_for_step(settings):
    hf_greedy = _hf_greedy()
    rng = random.Random(0)
    metrics = [rng.uniform(0, 1) * (1 - i / 400) for i in range(300)]
    rates = {}
    for name, cls in (("ours", GreedyLR), ("hf", hf_greedy)):
        params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
        optimizer = torch.optim.SGD([{"params": [params[0]]}, {"params": [params[1]], "lr": 0.2}], lr=0.1)
        scheduler = cls(optimizer, **settings)
        trace = []
        for value in metrics:
            scheduler.step(value)
            trace.append(tuple(scheduler.get_last_lr()))
        rates[name] = trace
    np.testing.assert_allclose(np.array(rates["ours"]), np.array(rates["hf"]), rtol=1e-12)
    assert len(set(rates["ours"])) > 3  # the rates really moved


def test_greedy_lr_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    from raytrainer.checkpoints import safe_load

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = GreedyLR(optimizer, patience=0, factor=0.5, smooth=True, window_size=3)
    for value in (1.0, 0.5, 0.4, 0.6, 0.7):
        scheduler.step(value)
    torch.save(scheduler.state_dict(), tmp_path / "scheduler.pt")
    fresh_optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    restored = GreedyLR(fresh_optimizer)
    restored.load_state_dict(safe_load(str(tmp_path / "scheduler.pt")))
    for value in (0.3, 0.9, 0.8):
        scheduler.step(value)
        restored.step(value)
    assert restored.get_last_lr() == scheduler.get_last_lr()
    assert fresh_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]


def test_learning_rate_before_the_scheduler_exists(make_args):
    trainer = Trainer(model=RegressionModel(), args=make_args(learning_rate=0.003))
    assert trainer._get_learning_rate() == 0.003
    model = RegressionModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
    assert Trainer(model=model, args=make_args(), optimizers=(optimizer, None))._get_learning_rate() == 0.2


# --------------------------------------------------------------------------- log_level="info"

SUMMARY_KEYS = ("Num examples", "Num Epochs", "Num update steps per epoch", "Instantaneous batch size per device",
                "Total train batch size (w. parallel, distributed & accumulation)", "Gradient Accumulation steps",
                "Total optimization steps", "Number of trainable parameters")


def _summary(messages) -> dict:
    start = messages.index("***** Running training *****")
    pairs = [line.strip().split(" = ") for line in messages[start + 1:start + 1 + len(SUMMARY_KEYS)]]
    return dict(pairs)


def test_info_level_shows_the_training_summary_like_transformers(tmp_path, caplog):
    settings = dict(report_to="none", disable_tqdm=True, save_strategy="no", log_level="info", num_train_epochs=2,
                    per_device_train_batch_size=4, gradient_accumulation_steps=2)
    with caplog.at_level(logging.INFO, logger="raytrainer"):
        Trainer(model=RegressionModel(), args=raytrainer.TrainingArguments(output_dir=str(tmp_path / "ours"),
                **settings), train_dataset=RegressionDataset(20)).train()
    ours = _summary(caplog.messages)
    assert list(ours) == list(SUMMARY_KEYS)
    assert ours == {"Num examples": "20", "Num Epochs": "2", "Num update steps per epoch": "3",
                    "Instantaneous batch size per device": "4",
                    "Total train batch size (w. parallel, distributed & accumulation)": "8",
                    "Gradient Accumulation steps": "2", "Total optimization steps": "6",
                    "Number of trainable parameters": "65"}
    transformers = pytest.importorskip("transformers")
    hf_args = transformers.TrainingArguments(output_dir=str(tmp_path / "hf"), **settings)
    messages = transformers_log_messages(lambda: transformers.Trainer(
        model=RegressionModel(), args=hf_args, train_dataset=RegressionDataset(20)).train(), logging.INFO)
    assert _summary(messages) == ours


def test_info_level_reaches_stderr_without_any_logging_set_up(tmp_path):
    import subprocess
    import sys

    script = (
        "import sys; sys.path.insert(0, {tests!r})\n"
        "from conftest import RegressionDataset, RegressionModel\n"
        "from raytrainer import Trainer, TrainingArguments\n"
        "args = TrainingArguments(output_dir={out!r}, log_level='info', disable_tqdm=True, max_steps=1,\n"
        "                         save_strategy='no', report_to='none')\n"
        "Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(8)).train()\n"
    ).format(tests=os.path.dirname(__file__), out=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert "***** Running training *****" in lines and "  Total optimization steps = 1" in lines
    assert lines.count("***** Running training *****") == 1


def test_passive_level_stays_quiet_under_a_chatty_root_logger(make_args, caplog):
    """A Ray worker process (or an application) sets the root logger to INFO: with the default
    log_level="passive" raytrainer still logs from WARNING up, as transformers' logger does."""
    library = logging.getLogger("raytrainer")
    saved = library.level
    library.setLevel(logging.NOTSET)  # as in a fresh process
    try:
        caplog.set_level(logging.INFO)  # the root logger
        Trainer(model=RegressionModel(), args=make_args(max_steps=1), train_dataset=RegressionDataset(8)).train()
        assert library.level == logging.WARNING
        assert "***** Running training *****" not in caplog.messages
        library.setLevel(logging.INFO)  # set by the user: "passive" keeps it
        Trainer(model=RegressionModel(), args=make_args(max_steps=1), train_dataset=RegressionDataset(8)).train()
        assert "***** Running training *****" in caplog.messages
    finally:
        library.setLevel(saved)


def test_a_resumed_run_says_which_arguments_differ(make_args, caplog):
    args = make_args(max_steps=4, save_strategy="steps", save_steps=2)
    Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(16)).train()
    args = make_args(max_steps=6, save_strategy="steps", save_steps=3, logging_steps=2, log_level="info")
    with caplog.at_level(logging.INFO, logger="raytrainer"):
        Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(16)).train(
            resume_from_checkpoint=os.path.join(args.output_dir, "checkpoint-4"))
    folder = os.path.join(args.output_dir, "checkpoint-4")
    assert (f"The arguments of this run differ from those in {folder}/trainer_state.json:\n"
            "  logging_steps: 2 (this run) != 1 (checkpoint)\n  save_steps: 3 (this run) != 2 (checkpoint)"
            ) in caplog.messages
    assert f"  Resuming training from {folder} with epoch 1 and global step 4" in caplog.messages  # 4 steps an epoch


# --------------------------------------------------------------------------- memory metrics

class Hungry(RegressionModel):
    """Each forward holds 40 MB briefly and keeps 8 MB: a peak well above what stays."""

    def forward(self, x, labels=None):
        scratch = torch.ones(10_000_000)  # 40 MB, freed on return
        self.kept = torch.ones(2_000_000)
        del scratch
        return super().forward(x, labels)


MB = 1024 * 1024


def test_memory_metrics_are_reported_under_hf_names(make_args):
    trainer = Trainer(model=Hungry(), args=make_args(max_steps=2, skip_memory_metrics=False),
                      train_dataset=RegressionDataset(8))
    train = trainer.train().metrics
    evaluation = trainer.evaluate(RegressionDataset(8))
    test = trainer.predict(RegressionDataset(8)).metrics
    assert {k for k in train if "mem" in k} == {
        "before_init_mem_cpu", "init_mem_cpu_alloc_delta", "init_mem_cpu_peaked_delta", "train_mem_cpu_alloc_delta",
        "train_mem_cpu_peaked_delta"}
    assert {k for k in evaluation if "mem" in k} == {"eval_mem_cpu_alloc_delta", "eval_mem_cpu_peaked_delta"}
    assert {k for k in test if "mem" in k} == {"test_mem_cpu_alloc_delta", "test_mem_cpu_peaked_delta"}
    assert train["before_init_mem_cpu"] > 50 * MB  # the interpreter with torch loaded
    for metrics, stage in ((evaluation, "eval"), (test, "test")):
        assert metrics[f"{stage}_mem_cpu_peaked_delta"] >= 30 * MB  # the 40 MB scratch tensor
        assert abs(metrics[f"{stage}_mem_cpu_alloc_delta"]) < 30 * MB
    logged = [e for e in trainer.state.log_history if "train_runtime" in e][0]
    assert logged["train_mem_cpu_peaked_delta"] == train["train_mem_cpu_peaked_delta"]


def test_memory_metrics_match_transformers_names(tmp_path):
    transformers = pytest.importorskip("transformers")
    names = {}
    for library in (raytrainer, transformers):
        args = library.TrainingArguments(output_dir=str(tmp_path / library.__name__), max_steps=1, report_to="none",
                                         save_strategy="no", skip_memory_metrics=False, disable_tqdm=True)
        trainer = library.Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(8))
        metrics = {**trainer.train().metrics, **trainer.evaluate(RegressionDataset(4)),
                   **trainer.predict(RegressionDataset(4)).metrics}
        names[library.__name__] = sorted(k for k in metrics if "mem" in k)
    assert names["raytrainer"] == names["transformers"]


def test_no_memory_metrics_by_default(make_args):
    trainer = Trainer(model=RegressionModel(), args=make_args(max_steps=1), train_dataset=RegressionDataset(8))
    assert not any("mem" in key for key in {**trainer.train().metrics, **trainer.evaluate(RegressionDataset(4))})


def test_cpu_peak_without_the_kernel_high_water_mark(monkeypatch):
    import psutil

    from raytrainer import memory_metrics

    monkeypatch.setattr(memory_metrics, "_reset_kernel_peak", lambda: False)  # macOS and co: sampling thread
    peak = memory_metrics._CpuPeak(psutil.Process())
    peak.start()
    before = psutil.Process().memory_info().rss
    block = torch.ones(25_000_000)  # 100 MB
    import time

    time.sleep(0.05)
    del block
    assert peak.stop() - before >= 80 * MB


def test_evaluation_inside_training_counts_toward_train(make_args):
    args = make_args(max_steps=2, skip_memory_metrics=False, eval_strategy="steps", eval_steps=1)
    trainer = Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(8),
                      eval_dataset=RegressionDataset(4))
    trainer.train()
    evaluations = [e for e in trainer.state.log_history if "eval_loss" in e]
    assert len(evaluations) == 2 and not any("eval_mem_cpu_alloc_delta" in e for e in evaluations)
