"""Seq2SeqTrainer: generation kwargs from arguments and calls, generated ids as predictions."""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from raytrainer import Seq2SeqTrainer, Seq2SeqTrainingArguments


class CopyModel(nn.Module):
    """generate() repeats the first input token max_length times, so outputs are easy to predict."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10)
        self.generate_calls = []

    def forward(self, input_ids, labels=None):
        logits = self.head(self.embed(input_ids))
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        return out

    def generate(self, input_ids, max_length=3, num_beams=1):
        self.generate_calls.append({"max_length": max_length, "num_beams": num_beams})
        return input_ids[:, :1].repeat(1, max_length)


def _rows(n=5):
    return [{"input_ids": torch.tensor([i, 1, 2]), "labels": torch.tensor([i, i, -100])} for i in range(n)]


def test_predict_with_generate_returns_generated_ids(tmp_path):
    args = Seq2SeqTrainingArguments(output_dir=str(tmp_path), predict_with_generate=True, generation_max_length=4,
                                    generation_num_beams=2, per_device_eval_batch_size=2, disable_tqdm=True)
    model = CopyModel()
    trainer = Seq2SeqTrainer(model=model, args=args, compute_metrics=lambda p: {"width": p.predictions.shape[1]})
    output = trainer.predict(_rows())
    np.testing.assert_array_equal(output.predictions, np.repeat(np.arange(5)[:, None], 4, axis=1))
    assert model.generate_calls[0] == {"max_length": 4, "num_beams": 2}
    assert "test_loss" in output.metrics
    metrics = trainer.evaluate(_rows(), max_length=2)
    assert model.generate_calls[-1] == {"max_length": 2, "num_beams": 2}
    assert metrics["eval_width"] == 2


def test_without_generate_it_is_the_plain_trainer(tmp_path):
    args = Seq2SeqTrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=2, disable_tqdm=True)
    output = Seq2SeqTrainer(model=CopyModel(), args=args).predict(_rows(4))
    assert output.predictions.shape == (4, 3, 10)  # logits


def test_predict_with_generate_needs_a_generate_method(tmp_path):
    class NoGenerate(CopyModel):
        generate = None

    args = Seq2SeqTrainingArguments(output_dir=str(tmp_path), predict_with_generate=True)
    with pytest.raises(ValueError, match="no generate"):
        Seq2SeqTrainer(model=NoGenerate(), args=args)
