"""Model-side behaviours: a model's own state-dict load hooks run on resume (with the all-or-nothing
guarantee kept), label smoothing with a multi-label model, and Seq2Seq generation settings
(``generation_config``, ``sortish_sampler``)."""

import json
import os
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import RegressionDataset, RegressionModel
from test_seq2seq import CopyModel, _rows

from raytrainer import Seq2SeqTrainer, Seq2SeqTrainingArguments, Trainer
from raytrainer.checkpoints import load_weights, save_weights

# --------------------------------------------------------------------------- load hooks


class GrowingHistory(RegressionModel):
    """Keeps a buffer of every training loss seen: its length grows with training, so a fresh model's
    buffer never has the checkpoint's shape. ``_load_from_state_dict`` resizes it to the saved one."""

    def __init__(self):
        super().__init__()
        self.register_buffer("history", torch.zeros(0))

    def forward(self, x, labels=None):
        out = super().forward(x, labels)
        if self.training and labels is not None:
            self.history = torch.cat([self.history, out["loss"].detach().reshape(1)])
        return out

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        saved = state_dict.get(prefix + "history")
        if saved is not None:
            self.history = torch.empty_like(saved)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


def test_resume_runs_the_models_own_load_code(make_args):
    def train(max_steps, resume=None, save_steps=3):
        torch.manual_seed(0)
        model = GrowingHistory()
        # a constant rate: a 3-step run then follows the first half of the 6-step one exactly
        args = make_args(max_steps=max_steps, save_strategy="steps", save_steps=save_steps,
                         lr_scheduler_type="constant")
        Trainer(model=model, args=args, train_dataset=RegressionDataset(24)).train(resume_from_checkpoint=resume)
        return model, args

    straight, _ = train(6, save_steps=100)
    _, args = train(3)
    resumed, _ = train(6, resume=os.path.join(args.output_dir, "checkpoint-3"))
    assert resumed.history.shape == (6,)  # 3 restored by the hook + 3 trained after the resume
    assert torch.equal(resumed.history, straight.history)  # bit-exact, as any resume
    assert all(torch.equal(ours, theirs) for ours, theirs in zip(resumed.parameters(), straight.parameters()))


def test_a_hooked_load_that_fails_leaves_the_model_untouched(tmp_path):
    source = GrowingHistory()
    source.history = torch.arange(4.0)
    source.fc2 = nn.Linear(8, 2)  # the checkpoint's head has 2 outputs, the target's 1
    save_weights(source, str(tmp_path))
    target = GrowingHistory()
    history, weight = target.history, target.fc2.weight
    before = {name: tensor.clone() for name, tensor in target.state_dict().items()}
    with pytest.raises(RuntimeError, match=r"(?s)does not fit GrowingHistory: .*size mismatch for fc2.weight"):
        load_weights(target, str(tmp_path))
    after = target.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)
    assert target.history is history and target.history.shape == (0,)  # the hook's resize is undone
    assert target.fc2.weight is weight


def test_a_hooked_load_reports_missing_and_unexpected_tensors(tmp_path):
    class Renamed(GrowingHistory):
        def __init__(self):
            super().__init__()
            self.extra = nn.Linear(2, 2)

    save_weights(GrowingHistory(), str(tmp_path))
    target = Renamed()
    before = target.extra.weight.clone()
    with pytest.raises(RuntimeError, match=r"does not fit Renamed: missing tensor extra.weight; missing tensor "
                                           r"extra.bias"):
        load_weights(target, str(tmp_path))
    assert torch.equal(target.extra.weight, before)


def test_models_without_load_hooks_keep_the_fast_path(tmp_path, monkeypatch):
    from raytrainer.checkpoints import hooked_load

    model = RegressionModel()
    save_weights(model, str(tmp_path))
    monkeypatch.setattr(hooked_load, "_snapshot", lambda model: pytest.fail("no snapshot for a plain model"))
    other = RegressionModel()
    load_weights(other, str(tmp_path))
    assert torch.equal(other.fc1.weight, model.fc1.weight)
    assert not hooked_load.customises_loading(other) and hooked_load.customises_loading(GrowingHistory())
    plain = RegressionModel()
    plain.register_load_state_dict_post_hook(lambda module, keys: None)
    assert hooked_load.customises_loading(plain)


# --------------------------------------------------------------------------- label smoothing


class MultiLabel(RegressionModel):
    def __init__(self):
        super().__init__()
        self.config = type("Config", (), {"problem_type": "multi_label_classification"})()


MULTI_LABEL_WARNING = ("Label smoothing is not compatible with multi-label classification. Disabling label smoothing "
                       "for this training run.")


def test_label_smoothing_with_a_multi_label_model_warns_and_is_off(make_args):
    with pytest.warns(UserWarning, match=MULTI_LABEL_WARNING):
        trainer = Trainer(model=MultiLabel(), args=make_args(label_smoothing_factor=0.1),
                          train_dataset=RegressionDataset(8))
    assert trainer.label_smoother is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Trainer(model=RegressionModel(), args=make_args(label_smoothing_factor=0.1)).label_smoother is not None
    transformers = pytest.importorskip("transformers")
    args = transformers.TrainingArguments(output_dir="unused", label_smoothing_factor=0.1, report_to="none")
    with pytest.warns(UserWarning, match=MULTI_LABEL_WARNING):
        assert transformers.Trainer(model=MultiLabel(), args=args).label_smoother is None


# --------------------------------------------------------------------------- Seq2Seq generation


def _generation_run(tmp_path, model=None, **overrides):
    model = model or CopyModel()
    args = Seq2SeqTrainingArguments(output_dir=str(tmp_path), predict_with_generate=True, disable_tqdm=True,
                                    report_to="none", per_device_eval_batch_size=4, **overrides)
    output = Seq2SeqTrainer(model=model, args=args).predict(_rows(4))
    return model, output


def test_generation_config_object_reaches_generate(tmp_path):
    transformers = pytest.importorskip("transformers")
    model, output = _generation_run(tmp_path, generation_config=transformers.GenerationConfig(max_length=5,
                                                                                              num_beams=2))
    assert model.generate_calls == [{"max_length": 5, "num_beams": 2}]
    assert output.predictions.shape == (4, 5)
    assert model.generation_config.max_length == 5  # it became the model's config, as in HF
    model, _ = _generation_run(tmp_path, generation_config=transformers.GenerationConfig(max_length=5, num_beams=2),
                               generation_max_length=4)
    assert model.generate_calls == [{"max_length": 4, "num_beams": 2}]  # generation_max_length overrides the config


def test_generation_config_dict_and_paths(tmp_path):
    model, _ = _generation_run(tmp_path, generation_config={"max_length": 6})
    assert model.generate_calls == [{"max_length": 6, "num_beams": 1}]
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "generation_config.json").write_text(json.dumps({"max_length": 7, "num_beams": 3}))
    (folder / "other.json").write_text(json.dumps({"max_length": 2}))
    for path, expected in ((str(folder), 7), (str(folder / "other.json"), 2)):
        model, output = _generation_run(tmp_path, generation_config=path)
        assert model.generate_calls[0]["max_length"] == expected and output.predictions.shape == (4, expected)


def test_generate_with_a_generation_config_parameter_receives_the_config(tmp_path):
    received = []

    class ConfigAware(CopyModel):
        def generate(self, input_ids, generation_config=None, **kwargs):
            received.append((generation_config, kwargs))
            return input_ids[:, :1].repeat(1, generation_config.max_length)

    transformers = pytest.importorskip("transformers")
    config = transformers.GenerationConfig(max_length=3)
    _, output = _generation_run(tmp_path, model=ConfigAware(), generation_config=config, generation_num_beams=1)
    assert received[0][0].max_length == 3 and received[0][0] is not config  # a copy, as HF makes
    assert received[0][1] == {"num_beams": 1}


def test_an_invalid_generation_config_is_refused_before_training(tmp_path):
    transformers = pytest.importorskip("transformers")
    args = Seq2SeqTrainingArguments(output_dir=str(tmp_path), predict_with_generate=True, report_to="none",
                                    generation_config=transformers.GenerationConfig(num_beams=1, early_stopping=True))
    with pytest.raises(ValueError, match="(?s)generation_config is invalid: .*early_stopping"):
        Seq2SeqTrainer(model=CopyModel(), args=args)
    args = Seq2SeqTrainingArguments(output_dir=str(tmp_path), generation_config=str(tmp_path / "missing.json"),
                                    report_to="none")
    with pytest.raises(OSError):
        Seq2SeqTrainer(model=CopyModel(), args=args)


def test_generation_config_with_a_transformers_model(tmp_path):
    transformers = pytest.importorskip("transformers")
    from _hf_models import tiny_llama_lm

    model = tiny_llama_lm()
    rows = [{"input_ids": torch.tensor([3, 4, 5, 6]), "labels": torch.tensor([3, 4, 5, 6])} for _ in range(2)]
    args = Seq2SeqTrainingArguments(
        output_dir=str(tmp_path), predict_with_generate=True, report_to="none", disable_tqdm=True,
        generation_config=transformers.GenerationConfig(max_new_tokens=3, do_sample=False,
                                                        pad_token_id=model.config.pad_token_id or 0))
    output = Seq2SeqTrainer(model=model, args=args).predict(rows)
    assert output.predictions.shape == (2, 4 + 3)  # the prompt and exactly max_new_tokens from the config
    np.testing.assert_array_equal(output.predictions[:, :4], np.array([[3, 4, 5, 6]] * 2))


def test_sortish_sampler_groups_training_batches_by_length(tmp_path):
    from _hf_models import ListDataset

    from raytrainer.data.samplers import length_grouped_order

    generator = torch.Generator().manual_seed(3)
    lengths = torch.randint(1, 17, (64,), generator=generator).tolist()
    rows = [{"input_ids": torch.arange(1, n + 1), "length": n} for n in lengths]

    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(()))
            self.batch_lengths = []

        def forward(self, input_ids, length=None):
            self.batch_lengths.append(length.tolist())
            return {"loss": (self.weight * input_ids.float().mean()) ** 2}

    def collate(batch):
        width = max(len(row["input_ids"]) for row in batch)
        ids = torch.stack([nn.functional.pad(row["input_ids"], (0, width - len(row["input_ids"]))) for row in batch])
        return {"input_ids": ids, "length": torch.tensor([row["length"] for row in batch])}

    model = Recorder()
    args = Seq2SeqTrainingArguments(output_dir=str(tmp_path), sortish_sampler=True, report_to="none",
                                    disable_tqdm=True, save_strategy="no", per_device_train_batch_size=4,
                                    num_train_epochs=1, remove_unused_columns=False, seed=5)
    assert args.group_by_length is True and args.train_sampling_strategy == "group_by_length"
    Seq2SeqTrainer(model=model, args=args, train_dataset=ListDataset(rows), data_collator=collate).train()
    batches = model.batch_lengths[-16:]  # the constructor's probe ran first
    # the sortish order: shuffled, then chunks of 4 batches sorted by decreasing length, longest first
    order = length_grouped_order(lengths, 4, torch.Generator().manual_seed(5))
    assert batches == [[lengths[i] for i in order[k:k + 4]] for k in range(0, 64, 4)]
    assert batches[0][0] == max(lengths)
    padding = sum(4 * max(batch) - sum(batch) for batch in batches)
    shuffled = torch.randperm(64, generator=torch.Generator().manual_seed(5)).tolist()
    random_padding = sum(4 * max(lengths[i] for i in shuffled[k:k + 4]) - sum(lengths[i] for i in shuffled[k:k + 4])
                         for k in range(0, 64, 4))
    assert padding < random_padding / 2
    with pytest.raises(ValueError, match="sortish_sampler=True and train_sampling_strategy='sequential'"):
        Seq2SeqTrainingArguments(sortish_sampler=True, train_sampling_strategy="sequential")
