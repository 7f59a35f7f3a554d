"""Checkpoints cross between raytrainer and transformers.Trainer in both directions."""

import os

import pytest
import torch

transformers = pytest.importorskip("transformers")

from _hf_models import tiny_bert_classifier  # noqa: E402

from raytrainer import Trainer, TrainerCallback, TrainingArguments  # noqa: E402


class Rows(torch.utils.data.Dataset):
    def __init__(self, n=16):
        generator = torch.Generator().manual_seed(0)
        self.ids = torch.randint(3, 50, (n, 8), generator=generator)
        self.labels = (self.ids[:, 0] > 25).long()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(8, dtype=torch.long), "labels": self.labels[i]}


def _args(cls, out, max_steps):
    return cls(output_dir=str(out), max_steps=max_steps, save_strategy="steps", save_steps=2, logging_steps=1,
               per_device_train_batch_size=4, report_to="none", disable_tqdm=True, learning_rate=1e-2, use_cpu=True)


def test_transformers_resumes_from_a_raytrainer_checkpoint(tmp_path):
    ours = Trainer(model=tiny_bert_classifier(), args=_args(TrainingArguments, tmp_path, 2), train_dataset=Rows())
    ours.train()
    checkpoint = tmp_path / "checkpoint-2"
    assert {"config.json", "model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth",
            "trainer_state.json"} <= set(os.listdir(checkpoint))
    theirs = transformers.Trainer(model=tiny_bert_classifier(seed=1), args=_args(transformers.TrainingArguments, tmp_path, 4),
                                  train_dataset=Rows())
    theirs.train(resume_from_checkpoint=str(checkpoint))
    assert theirs.state.global_step == 4
    assert [e["step"] for e in theirs.state.log_history if "loss" in e][:2] == [1, 2]  # our history was kept
    # the optimizer state came along: Adam's step counter continued from 2
    assert all(int(s["step"]) == 4 for s in theirs.optimizer.state_dict()["state"].values())


def test_raytrainer_resumes_from_a_transformers_checkpoint(tmp_path):
    theirs = transformers.Trainer(model=tiny_bert_classifier(), args=_args(transformers.TrainingArguments, tmp_path, 2),
                                  train_dataset=Rows())
    theirs.train()
    trained = {k: v.clone() for k, v in theirs.model.state_dict().items()}
    model = tiny_bert_classifier(seed=1)
    at_start = {}

    class Capture(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            at_start["weight"] = model.classifier.weight.detach().clone()
            at_start["step"] = state.global_step

    ours = Trainer(model=model, args=_args(TrainingArguments, tmp_path, 4), train_dataset=Rows(), callbacks=[Capture()])
    ours.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    assert at_start["step"] == 2 and torch.equal(at_start["weight"], trained["classifier.weight"])
    assert ours.state.global_step == 4
    assert all(int(s["step"]) == 4 for s in ours.optimizer.state_dict()["state"].values())
    assert not torch.equal(model.classifier.weight, trained["classifier.weight"])  # it trained on from there
