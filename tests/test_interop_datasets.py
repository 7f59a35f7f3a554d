"""raytrainer with ``datasets.Dataset``: column pruning, dicts of eval sets, predict, group_by_length."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

datasets = pytest.importorskip("datasets")

import raytrainer  # noqa: E402
from _hf_models import separable_classification_rows  # noqa: E402

QUIET = dict(report_to="none", disable_tqdm=True, save_strategy="no")


class BagOfTokens(nn.Module):
    """Mean of token embeddings -> 2 classes. forward takes exactly input_ids and labels."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(50, 8)
        self.head = nn.Linear(8, 2)
        self.batch_keys = []

    def logits(self, input_ids):
        return self.head(self.embed(input_ids).mean(1))

    def outputs(self, input_ids, labels):
        logits = self.logits(input_ids)
        if labels is None:
            return {"logits": logits}
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}

    def forward(self, input_ids, labels=None):
        self.batch_keys.append(("input_ids", "labels") if labels is not None else ("input_ids",))
        return self.outputs(input_ids, labels)


class BagOfTokensWithExtras(BagOfTokens):
    """Also accepts the extra columns, to see what reaches forward when nothing is removed."""

    def forward(self, input_ids, labels=None, idx=None, length=None):
        self.batch_keys.append(tuple(name for name, value in
                                     (("input_ids", input_ids), ("labels", labels), ("idx", idx), ("length", length))
                                     if value is not None))
        return self.outputs(input_ids, labels)


def _dataset(length: int, seed: int = 0, extras: bool = True):
    columns = separable_classification_rows(length, seq_len=6, seed=seed)
    del columns["attention_mask"]
    if extras:
        columns["text"] = [f"example {i}" for i in range(length)]  # a string column
        columns["idx"] = list(range(length))  # an int column forward does not take
    return datasets.Dataset.from_dict(columns)


def _trainer(tmp_path, model, train=None, eval_dataset=None, **overrides):
    settings = dict(QUIET, per_device_train_batch_size=4, per_device_eval_batch_size=8, logging_steps=1,
                    num_train_epochs=1)
    settings.update(overrides)
    args = raytrainer.TrainingArguments(output_dir=str(tmp_path / "out"), **settings)
    return raytrainer.Trainer(model=model, args=args, train_dataset=train, eval_dataset=eval_dataset)


def _expected_eval_loss(model, dataset) -> float:
    """The mean cross-entropy over ``dataset`` (one eval batch holds it all)."""
    with torch.no_grad():
        logits = model.logits(torch.tensor(dataset["input_ids"]))
        return F.cross_entropy(logits, torch.tensor(dataset["label"])).item()


# ---------------------------------------------------------------------------------------------
# remove_unused_columns
# ---------------------------------------------------------------------------------------------
def test_unused_string_and_int_columns_are_removed_then_it_trains_and_evaluates(tmp_path):
    train, evaluation = _dataset(16), _dataset(8, seed=1)
    model = BagOfTokens()
    trainer = _trainer(tmp_path, model, train, evaluation, learning_rate=0.05, num_train_epochs=2)

    batch = next(iter(trainer.get_train_dataloader()))
    assert sorted(batch) == ["input_ids", "labels"]
    assert batch["input_ids"].shape == (4, 6) and batch["labels"].dtype == torch.long
    trainer.train()
    metrics = trainer.evaluate()

    assert trainer.state.global_step == 8  # 16 rows / batch 4 x 2 epochs
    assert set(model.batch_keys) == {("input_ids", "labels")}
    assert metrics["eval_loss"] == pytest.approx(_expected_eval_loss(model, evaluation), abs=1e-6)
    assert metrics["epoch"] == 2.0
    assert train.column_names == ["input_ids", "label", "text", "idx"]  # the user's dataset is untouched


def test_remove_unused_columns_false_keeps_the_columns(tmp_path):
    model = BagOfTokensWithExtras()
    trainer = _trainer(tmp_path, model, _dataset(8), remove_unused_columns=False)

    batch = next(iter(trainer.get_train_dataloader()))
    # the default collator keeps every tensor-able column and leaves strings out, as HF's does
    assert sorted(batch) == ["idx", "input_ids", "labels"]
    model.batch_keys.clear()  # drop the constructor's probe
    trainer.train()
    assert model.batch_keys == [("input_ids", "labels", "idx")] * 2
    assert sorted(torch.cat([b["idx"] for b in trainer.get_train_dataloader()]).tolist()) == list(range(8))


def test_remove_unused_columns_false_with_a_model_that_cannot_take_them_fails_clearly(tmp_path):
    with pytest.raises(TypeError, match="unexpected keyword argument 'idx'"):
        trainer = _trainer(tmp_path, BagOfTokens(), _dataset(8), remove_unused_columns=False)
        trainer.train()


def test_no_column_the_model_takes_is_a_clear_error(tmp_path):
    unrelated = datasets.Dataset.from_dict({"tokens": [[1, 2]] * 4, "target": [0, 1, 0, 1]})
    with pytest.raises(ValueError, match=r"No column of the training dataset matches .*\['tokens', 'target'\]"):
        _trainer(tmp_path, BagOfTokens(), unrelated).train()


def test_unused_columns_are_removed_for_a_transformers_model(tmp_path):
    pytest.importorskip("transformers")
    from _hf_models import tiny_bert_classifier

    columns = separable_classification_rows(8)
    columns["word_ids"] = [list(range(i % 3 + 1)) for i in range(8)]  # ragged: cannot be stacked
    trainer = _trainer(tmp_path, tiny_bert_classifier(), datasets.Dataset.from_dict(columns))
    trainer.train()
    assert trainer.state.global_step == 2


# ---------------------------------------------------------------------------------------------
# Evaluation on several datasets, prediction order
# ---------------------------------------------------------------------------------------------
def test_a_dict_of_eval_datasets_is_evaluated_one_by_one(tmp_path):
    sets = {"near": _dataset(8, seed=1), "far": _dataset(6, seed=2)}
    model = BagOfTokens()
    trainer = _trainer(tmp_path, model, _dataset(8), sets, eval_strategy="epoch", logging_strategy="no")
    trainer.train()

    evaluations = [entry for entry in trainer.state.log_history if "eval_near_loss" in entry or "eval_far_loss" in entry]
    assert [(entry["step"], "eval_near_loss" in entry) for entry in evaluations] == [(2, True), (2, False)]
    metrics = trainer.evaluate()
    assert {key for key in metrics if key.endswith("_loss")} == {"eval_near_loss", "eval_far_loss"}
    for name, dataset in sets.items():
        assert metrics[f"eval_{name}_loss"] == pytest.approx(_expected_eval_loss(model, dataset), abs=1e-6)
    single = trainer.evaluate(sets["far"])
    assert single["eval_loss"] == pytest.approx(metrics["eval_far_loss"], abs=1e-7)
    named = trainer.evaluate("near")  # a key of the dict, as transformers.Trainer.get_eval_dataloader takes
    assert named["eval_loss"] == pytest.approx(metrics["eval_near_loss"], abs=1e-7)


def test_predict_on_a_dataset_returns_predictions_in_order(tmp_path):
    test_set = _dataset(10, seed=3)
    model = BagOfTokens(seed=4)
    trainer = _trainer(tmp_path, model, per_device_eval_batch_size=3)  # 3 + 3 + 3 + 1

    output = trainer.predict(test_set)

    with torch.no_grad():
        expected = model.logits(torch.tensor(test_set["input_ids"])).numpy()
    assert output.predictions.shape == (10, 2)
    torch.testing.assert_close(torch.from_numpy(output.predictions), torch.from_numpy(expected), atol=1e-6, rtol=1e-6)
    assert output.label_ids.tolist() == test_set["label"]
    losses = torch.nn.functional.cross_entropy(torch.from_numpy(expected), torch.tensor(test_set["label"]),
                                               reduction="none")
    # the loss is the mean of batch means, weighted by batch size: here the plain per-example mean
    assert output.metrics["test_loss"] == pytest.approx(losses.mean().item(), abs=1e-6)
    assert {"test_loss", "test_runtime", "test_samples_per_second", "test_steps_per_second"} == set(output.metrics)


def test_evaluate_and_predict_on_datasets_match_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    sets = {"near": _dataset(8, seed=1), "far": _dataset(6, seed=2)}
    results = {}
    for name, module in (("ours", raytrainer), ("hf", transformers)):
        args = module.TrainingArguments(output_dir=str(tmp_path / name), per_device_eval_batch_size=4, **QUIET)
        trainer = module.Trainer(model=BagOfTokens(seed=5), args=args, eval_dataset=sets)
        results[name] = (trainer.evaluate(), trainer.predict(_dataset(10, seed=3)))
    (our_metrics, ours), (hf_metrics, hf) = results["ours"], results["hf"]
    losses = {key: value for key, value in our_metrics.items() if key.endswith("_loss")}
    assert set(losses) == {"eval_near_loss", "eval_far_loss"}
    assert losses == pytest.approx({key: hf_metrics[key] for key in losses}, abs=1e-6)
    torch.testing.assert_close(torch.from_numpy(ours.predictions), torch.from_numpy(hf.predictions), atol=1e-6, rtol=1e-6)
    assert ours.label_ids.tolist() == hf.label_ids.tolist()
    # Metrics only transformers 5 reports (the spec names neither): <prefix>_model_preparation_time when
    # it evaluates a model it has not prepared for training, and "epoch": 0 before any training (its
    # state.epoch starts at 0; raytrainer's, like transformers 4's, starts at None).
    extra_eval = {"epoch", "eval_near_model_preparation_time", "eval_far_model_preparation_time"}
    assert set(hf_metrics) - set(our_metrics) == extra_eval and set(our_metrics) < set(hf_metrics)
    assert set(hf.metrics) - set(ours.metrics) == {"test_model_preparation_time"}
    assert set(ours.metrics) < set(hf.metrics)
    assert ours.metrics["test_loss"] == pytest.approx(hf.metrics["test_loss"], abs=1e-6)


# ---------------------------------------------------------------------------------------------
# group_by_length
# ---------------------------------------------------------------------------------------------
LENGTHS = [(i * 7) % 16 + 1 for i in range(16)]  # a permutation of 1..16; the longest (16) is row 9


def _length_dataset():
    columns = {"input_ids": [[i + 3] * 4 for i in range(16)], "label": [i % 2 for i in range(16)], "length": LENGTHS}
    return datasets.Dataset.from_dict(columns)


def _grouped_batches(trainer, batch_size=2):
    order = list(trainer.get_train_dataloader().sampler)
    assert sorted(order) == list(range(16))  # every example once per epoch
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def _assert_grouped_by_the_length_column(batches):
    # 16 examples, batch 2 -> megabatches of min(16 // (2 * 4), 50) = 2 batches, longest first overall
    assert 9 in batches[0]
    for start in range(0, len(batches), 2):
        megabatch = [LENGTHS[index] for batch in batches[start:start + 2] for index in batch]
        rest = megabatch[1:] if start == 0 else megabatch  # the longest was swapped to the front
        assert rest == sorted(rest, reverse=True), megabatch


def test_group_by_length_reads_the_length_column_and_trains(tmp_path):
    model = BagOfTokensWithExtras()
    trainer = _trainer(tmp_path, model, _length_dataset(), per_device_train_batch_size=2, group_by_length=True)

    _assert_grouped_by_the_length_column(_grouped_batches(trainer))
    trainer.train()
    assert trainer.state.global_step == 8
    assert set(model.batch_keys[1:]) == {("input_ids", "labels", "length")}


def test_group_by_length_without_a_length_column_measures_input_ids(tmp_path):
    columns = {"input_ids": [[5] * n for n in LENGTHS], "label": [0] * 16}
    trainer = _trainer(tmp_path, BagOfTokens(), datasets.Dataset.from_dict(columns),
                       per_device_train_batch_size=2, group_by_length=True)
    _assert_grouped_by_the_length_column(_grouped_batches(trainer))


def test_group_by_length_uses_the_length_column_even_when_forward_does_not_take_it(tmp_path):
    trainer = _trainer(tmp_path, BagOfTokens(), _length_dataset(), per_device_train_batch_size=2,
                       group_by_length=True)
    _assert_grouped_by_the_length_column(_grouped_batches(trainer))
