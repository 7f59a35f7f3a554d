"""raytrainer side by side with ``transformers.Trainer``: schedules, maths and HF models.

Both trainers get the same initial weights and data. Where their behaviours differ on purpose (the
spec in ``/work/shared/spec`` is silent or says otherwise) the test pins the exact difference, so a
change on either side is noticed.
"""

import copy
import os

import pytest
import torch

transformers = pytest.importorskip("transformers")

import raytrainer  # noqa: E402
from _hf_models import (  # noqa: E402
    ListDataset,
    checkpoint_folders,
    copy_state,
    log_kind,
    padded_lm_rows,
    separable_classification_rows,
    tiny_bert_classifier,
    tiny_llama_lm,
)
from conftest import RegressionDataset, RegressionModel  # noqa: E402

LIBRARIES = {"ours": raytrainer, "hf": transformers}
QUIET = dict(report_to="none", disable_tqdm=True, save_total_limit=None)


def _build_trainer(library, output_dir, model, train_dataset, eval_dataset=None, **overrides):
    module = LIBRARIES[library]
    settings = dict(QUIET, save_strategy="no", logging_steps=1)
    settings.update(overrides)
    args = module.TrainingArguments(output_dir=str(output_dir), **settings)
    return module.Trainer(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset)


def _train_both(tmp_path, model, train_dataset, eval_dataset=None, **overrides):
    """Train a copy of ``model`` with each library; returns {library: (trainer, final weights)}."""
    results = {}
    for library in LIBRARIES:
        trained = copy.deepcopy(model)
        trainer = _build_trainer(library, tmp_path / library, trained, train_dataset, eval_dataset, **overrides)
        trainer.train()
        results[library] = (trainer, copy_state(trained))
    return results


def _loss_logs(trainer, key="loss"):
    return [(entry["step"], entry[key]) for entry in trainer.state.log_history if "loss" in entry and "train_loss" not in entry]


def _assert_same_weights(results, tolerance=1e-5):
    ours, hf = results["ours"][1], results["hf"][1]
    assert ours.keys() == hf.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], hf[name], atol=tolerance, rtol=tolerance, msg=name)


def _assert_same_losses(results, tolerance=1e-4):
    ours, hf = _loss_logs(results["ours"][0]), _loss_logs(results["hf"][0])
    assert [step for step, _ in ours] == [step for step, _ in hf]
    for (step, our_loss), (_, hf_loss) in zip(ours, hf):
        # raytrainer rounds logged losses to 4 decimals, transformers 5 logs the full float
        assert our_loss == pytest.approx(hf_loss, abs=tolerance), f"loss at step {step}"


# ---------------------------------------------------------------------------------------------
# 1. When to log, evaluate and save: the same schedule as transformers.Trainer
# ---------------------------------------------------------------------------------------------
def _schedule_summary(trainer, output_dir) -> dict:
    state = trainer.state
    return {
        "logs": [(entry["step"], log_kind(entry), round(entry["epoch"], 4)) for entry in state.log_history],
        "log_keys": sorted({tuple(sorted(entry)) for entry in state.log_history}),
        "checkpoints": checkpoint_folders(str(output_dir)),
        "max_steps": state.max_steps,
        "global_step": state.global_step,
        "epoch": round(state.epoch, 4),
        "num_train_epochs": state.num_train_epochs,
        "intervals": (state.logging_steps, state.eval_steps, state.save_steps),
        "best_global_step": state.best_global_step,
    }


def _run_schedule(library, output_dir, train_size, overrides) -> dict:
    torch.manual_seed(0)
    settings = dict(per_device_train_batch_size=4, per_device_eval_batch_size=8, num_train_epochs=2, logging_steps=2)
    settings.update(overrides)
    trainer = _build_trainer(library, output_dir, RegressionModel(), RegressionDataset(train_size),
                             RegressionDataset(8, seed=5), **settings)
    trainer.train()
    return _schedule_summary(trainer, output_dir)


# (id, train_size, TrainingArguments overrides, what raytrainer must produce). With eval_strategy="steps"
# the last step is evaluated even when it is no multiple of eval_steps (HF v5's DefaultFlowCallback).
# With 20 examples and batch 4 an epoch is 5 optimizer steps.
SCHEDULES = [
    ("int_intervals", 20,
     dict(logging_steps=3, eval_strategy="steps", eval_steps=4, save_strategy="steps", save_steps=5),
     dict(logs=[(3, "loss"), (4, "eval"), (6, "loss"), (8, "eval"), (9, "loss"), (10, "eval"), (10, "train")],
          checkpoints=["checkpoint-5", "checkpoint-10"], max_steps=10, epoch=2.0)),
    ("ratio_intervals", 20,  # 0.25 * 10 -> ceil(2.5) = 3, 0.5 * 10 -> 5
     dict(logging_steps=0.25, eval_strategy="steps", eval_steps=0.5, save_strategy="steps", save_steps=0.5),
     dict(logs=[(3, "loss"), (5, "eval"), (6, "loss"), (9, "loss"), (10, "eval"), (10, "train")],
          checkpoints=["checkpoint-5", "checkpoint-10"], max_steps=10, intervals=(3, 5, 5))),
    ("epoch_strategies", 20,
     dict(logging_strategy="epoch", eval_strategy="epoch", save_strategy="epoch", num_train_epochs=3),
     dict(logs=[(5, "loss"), (5, "eval"), (10, "loss"), (10, "eval"), (15, "loss"), (15, "eval"), (15, "train")],
          checkpoints=["checkpoint-5", "checkpoint-10", "checkpoint-15"], max_steps=15)),
    ("first_step_and_step_delay", 20,
     dict(logging_first_step=True, logging_steps=4, eval_strategy="steps", eval_steps=2, eval_delay=5),
     dict(logs=[(1, "loss"), (4, "loss"), (6, "eval"), (8, "loss"), (8, "eval"), (10, "eval"), (10, "train")],
          checkpoints=[])),
    ("epoch_eval_delay", 20,
     dict(logging_first_step=True, logging_steps=5, eval_strategy="epoch", eval_delay=2, num_train_epochs=3),
     dict(logs=[(1, "loss"), (5, "loss"), (10, "loss"), (10, "eval"), (15, "loss"), (15, "eval"), (15, "train")])),
    ("accumulation_partial_window", 20,  # 5 batches, accumulation 3 -> windows [3, 2], 2 steps per epoch
     dict(gradient_accumulation_steps=3, logging_steps=1, eval_strategy="steps", eval_steps=2,
          save_strategy="steps", save_steps=3, num_train_epochs=3),
     dict(logs=[(1, "loss"), (2, "loss"), (2, "eval"), (3, "loss"), (4, "loss"), (4, "eval"), (5, "loss"),
                (6, "loss"), (6, "eval"), (6, "train")],
          checkpoints=["checkpoint-3", "checkpoint-6"], max_steps=6, epoch=3.0)),
    ("max_steps_mid_epoch", 20,
     dict(max_steps=7, logging_steps=2, eval_strategy="steps", eval_steps=3, save_strategy="steps", save_steps=3),
     dict(logs=[(2, "loss"), (3, "eval"), (4, "loss"), (6, "loss"), (6, "eval"), (7, "eval"), (7, "train")],
          checkpoints=["checkpoint-3", "checkpoint-6", "checkpoint-7"], max_steps=7, epoch=1.4,
          num_train_epochs=2)),
    ("fractional_epochs", 20,  # ceil(1.5 * 5) = 8 steps; the second epoch ends early, at step 8
     dict(num_train_epochs=1.5, logging_steps=2, save_strategy="epoch", eval_strategy="epoch"),
     dict(logs=[(2, "loss"), (4, "loss"), (5, "eval"), (6, "loss"), (8, "loss"), (8, "eval"), (8, "train")],
          checkpoints=["checkpoint-5", "checkpoint-8"], max_steps=8, epoch=1.6, num_train_epochs=2)),
    ("accumulation_ratios_max_steps", 20,  # 0.4 * 5 = 2, 0.6 * 5 -> ceil(3.0) = 3
     dict(gradient_accumulation_steps=2, max_steps=5, logging_steps=0.4, eval_strategy="steps", eval_steps=0.4,
          save_strategy="steps", save_steps=0.6),
     dict(logs=[(2, "loss"), (2, "eval"), (4, "loss"), (4, "eval"), (5, "eval"), (5, "train")],
          checkpoints=["checkpoint-3", "checkpoint-5"], intervals=(2, 2, 3))),
    ("save_best", 20,  # SGD at lr 0.5 makes eval_loss go up and down: only improvements are saved
     dict(save_strategy="best", metric_for_best_model="loss", eval_strategy="steps", eval_steps=1,
          logging_steps=3, max_steps=6, learning_rate=0.5, optim="sgd"),
     dict(logs=[(1, "eval"), (2, "eval"), (3, "loss"), (3, "eval"), (4, "eval"), (5, "eval"), (6, "loss"),
                (6, "eval"), (6, "train")],
          checkpoints=["checkpoint-1", "checkpoint-2", "checkpoint-3", "checkpoint-5"], best_global_step=5)),
]


@pytest.mark.parametrize("train_size, overrides, expected",
                         [case[1:] for case in SCHEDULES], ids=[case[0] for case in SCHEDULES])
def test_schedule_matches_transformers(tmp_path, train_size, overrides, expected):
    ours = _run_schedule("ours", tmp_path / "ours", train_size, overrides)
    hf = _run_schedule("hf", tmp_path / "hf", train_size, overrides)

    for key, value in expected.items():
        got = [entry[:2] for entry in ours["logs"]] if key == "logs" else ours[key]
        assert got == value, key
    assert ours == hf


# ---------------------------------------------------------------------------------------------
# 2. The same maths: identical weights after training, identical logged losses
# ---------------------------------------------------------------------------------------------
ADAMW_WARMUP_CLIP = dict(learning_rate=0.01, warmup_steps=2, max_grad_norm=0.5, weight_decay=0.1, num_train_epochs=4)


def test_adamw_warmup_clipping_full_batch_matches_transformers(tmp_path):
    # the batch is the whole dataset, so the data order cannot matter
    torch.manual_seed(0)
    results = _train_both(tmp_path, RegressionModel(), RegressionDataset(12), per_device_train_batch_size=12,
                          **ADAMW_WARMUP_CLIP)
    _assert_same_weights(results)
    _assert_same_losses(results)
    ours, hf = _loss_logs(results["ours"][0], "grad_norm"), _loss_logs(results["hf"][0], "grad_norm")
    assert [norm for _, norm in ours] == pytest.approx([norm for _, norm in hf], rel=1e-5)
    assert ours[0][1] > 0.5  # the clipping threshold was really exceeded, so clipping was exercised
    assert results["ours"][0].state.global_step == 4


def test_accumulation_over_a_whole_epoch_matches_transformers(tmp_path):
    # 3 micro-batches of 4 make one window that covers the epoch: any order gives the same gradient
    torch.manual_seed(0)
    model = RegressionModel()
    results = _train_both(tmp_path, model, RegressionDataset(12), per_device_train_batch_size=4,
                          gradient_accumulation_steps=3, **ADAMW_WARMUP_CLIP)
    _assert_same_weights(results)
    _assert_same_losses(results)
    # and it is the full-batch run: the mean of 3 equal-sized batch means is the full mean
    full_batch = _build_trainer("ours", tmp_path / "full", copy.deepcopy(model), RegressionDataset(12),
                                per_device_train_batch_size=12, **ADAMW_WARMUP_CLIP)
    full_batch.train()
    ours, full = _loss_logs(results["ours"][0]), _loss_logs(full_batch)
    assert [step for step, _ in ours] == [step for step, _ in full]
    assert [loss for _, loss in ours] == pytest.approx([loss for _, loss in full], abs=1e-4)


def test_bert_mean_loss_is_averaged_over_the_window_unlike_transformers(tmp_path):
    # BertForSequenceClassification takes **kwargs but its loss is a per-batch mean that ignores
    # num_items_in_batch. raytrainer's probe measures that, so the window averages its batch means
    # like any mean loss: 2 micro-batches of 4 are one batch of 8. transformers trusts the
    # signature, skips the division by the accumulation steps and logs (and steps with) twice the loss.
    rows = separable_classification_rows(8)
    dataset = ListDataset([{key: torch.tensor(rows[key][i]) for key in rows} for i in range(8)])
    model = tiny_bert_classifier()
    settings = dict(learning_rate=0.01, warmup_steps=1, num_train_epochs=3)
    results = _train_both(tmp_path, model, dataset, per_device_train_batch_size=4, gradient_accumulation_steps=2,
                          **settings)
    full_batch = _build_trainer("ours", tmp_path / "full", copy.deepcopy(model), dataset,
                                per_device_train_batch_size=8, **settings)
    full_batch.train()

    assert results["ours"][0].model_accepts_loss_kwargs is False
    ours, full, hf = (_loss_logs(trainer) for trainer in (results["ours"][0], full_batch, results["hf"][0]))
    assert [step for step, _ in ours] == [step for step, _ in full] == [1, 2, 3]
    assert [loss for _, loss in ours] == pytest.approx([loss for _, loss in full], abs=1e-5)
    assert [loss for _, loss in hf] == pytest.approx([2 * loss for _, loss in ours], rel=1e-4)
    full_weights = copy_state(full_batch.model)
    for name, value in results["ours"][1].items():
        torch.testing.assert_close(value, full_weights[name], atol=1e-5, rtol=1e-5, msg=name)


def test_logged_learning_rate_is_the_rate_the_step_used_like_transformers(tmp_path):
    # HF v5 logs the rate the optimizer step used (read before the scheduler steps); so do we.
    # Linear warmup over 2 of 4 steps.
    torch.manual_seed(0)
    results = _train_both(tmp_path, RegressionModel(), RegressionDataset(12), per_device_train_batch_size=12,
                          **ADAMW_WARMUP_CLIP)
    ours = [rate for _, rate in _loss_logs(results["ours"][0], "learning_rate")]
    hf = [rate for _, rate in _loss_logs(results["hf"][0], "learning_rate")]
    assert ours == pytest.approx([0.0, 0.005, 0.01, 0.005]) == hf


def test_partial_last_window_is_a_mean_like_transformers(tmp_path):
    # 3 batches of 4, accumulation 4: every epoch is one partial window of 3 micro-batches
    torch.manual_seed(0)
    results = _train_both(tmp_path, RegressionModel(), RegressionDataset(12), per_device_train_batch_size=4,
                          gradient_accumulation_steps=4, optim="sgd", max_grad_norm=0.0, learning_rate=0.01,
                          num_train_epochs=4)
    _assert_same_losses(results)
    _assert_same_weights(results)


# ---------------------------------------------------------------------------------------------
# 3. Transformers models trained by raytrainer
# ---------------------------------------------------------------------------------------------
def _accuracy(prediction):
    return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}


def _classification_dataset(length, seed):
    rows = separable_classification_rows(length, seed=seed)
    return ListDataset([{key: torch.tensor(rows[key][i]) for key in rows} for i in range(length)])


def test_bert_learns_a_separable_task_and_evaluates(tmp_path):
    model = tiny_bert_classifier(seed=1)
    args = raytrainer.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=8, per_device_eval_batch_size=16, learning_rate=2e-2,
        num_train_epochs=6, logging_strategy="epoch", eval_strategy="epoch", save_strategy="no", **QUIET)
    trainer = raytrainer.Trainer(model=model, args=args, train_dataset=_classification_dataset(32, 0),
                                 eval_dataset=_classification_dataset(16, 1), compute_metrics=_accuracy)
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()

    losses = [loss for _, loss in _loss_logs(trainer)]
    assert len(losses) == 6 and losses[-1] < 0.2 * losses[0]
    assert set(before) == {"eval_loss", "eval_accuracy", "eval_runtime", "eval_samples_per_second",
                           "eval_steps_per_second"}
    assert before["eval_loss"] == pytest.approx(0.6934, abs=1e-3)  # ln 2: a fresh 2-class head
    assert after["eval_loss"] < 0.2 * before["eval_loss"]
    assert (before["eval_accuracy"], after["eval_accuracy"]) == (0.5, 1.0)
    assert after["epoch"] == 6.0


def test_save_model_writes_a_folder_from_pretrained_loads(tmp_path):
    model = tiny_bert_classifier(seed=2)
    trainer = _build_trainer("ours", tmp_path / "out", model, _classification_dataset(8, 0),
                             per_device_train_batch_size=4, num_train_epochs=1, learning_rate=1e-2)
    trainer.train()
    trainer.save_model(str(tmp_path / "saved"))

    assert {"config.json", "model.safetensors", "training_args.json"} <= set(os.listdir(tmp_path / "saved"))
    loaded = transformers.BertForSequenceClassification.from_pretrained(str(tmp_path / "saved"))
    assert loaded.config.num_labels == 2 and loaded.config.hidden_size == 16
    saved_state, loaded_state = copy_state(model), copy_state(loaded)
    assert saved_state.keys() == loaded_state.keys()
    for name in saved_state:
        torch.testing.assert_close(loaded_state[name], saved_state[name], atol=0, rtol=0, msg=name)
    initial = copy_state(tiny_bert_classifier(seed=2))
    assert not torch.equal(initial["classifier.weight"], saved_state["classifier.weight"])  # it did train


def _record_num_items(model) -> list:
    seen = []

    def hook(module, args, kwargs):
        value = kwargs.get("num_items_in_batch")
        seen.append(None if value is None else int(value))

    model.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


LM_LENGTHS = [6, 4, 5, 3, 6, 2, 4, 5]  # 8 rows, batch 2, accumulation 4: one window per epoch


def test_causal_lm_gets_num_items_in_batch_and_matches_transformers(tmp_path):
    rows = padded_lm_rows(LM_LENGTHS, mask_first_label=True)
    model = tiny_llama_lm()
    seen = _record_num_items(model)
    results = _train_both(tmp_path, model, ListDataset(rows), per_device_train_batch_size=2,
                          gradient_accumulation_steps=4, learning_rate=0.01, num_train_epochs=3)
    # label tokens in the epoch: sum(length - 1 for the masked first label) = 27, for 4 micro-batches x 3 epochs
    tokens = sum(n - 1 for n in LM_LENGTHS)
    # raytrainer probes the model in its constructor (no count, then the first row's label tokens
    # and twice that: the loss divides by the count), then 12 micro-batches; then transformers' 12
    # micro-batches: every training forward got the whole window's count
    first = int((torch.as_tensor(rows[0]["labels"]) != -100).sum())
    assert seen == [None, first, 2 * first] + [tokens] * 24
    assert results["ours"][0].model_accepts_loss_kwargs is True
    _assert_same_weights(results)
    _assert_same_losses(results)
    assert results["ours"][0].state.global_step == 3


def test_causal_lm_counts_only_predicted_tokens_like_transformers(tmp_path):
    rows = padded_lm_rows(LM_LENGTHS, mask_first_label=False)
    results = _train_both(tmp_path, tiny_llama_lm(), ListDataset(rows), per_device_train_batch_size=2,
                          gradient_accumulation_steps=4, learning_rate=0.01, num_train_epochs=3)
    _assert_same_losses(results)
