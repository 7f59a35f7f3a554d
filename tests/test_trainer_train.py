"""The training loop against a bare PyTorch loop with the same semantics, step for step."""

import copy
import math

import pytest
import torch
from conftest import RegressionDataset, RegressionModel, TokenDataset, TokenModel

from raytrainer import Trainer, TrainerCallback
from raytrainer.compat.v5_fields import default_optimizer_name


def bare_loop(model, dataset, *, lr, weight_decay, warmup_steps, epochs, batch_size, accumulation,
              max_grad_norm, seed):
    """The HF Trainer's maths written out by hand: AdamW without decay on biases and norm weights,
    linear warmup/decay, loss / accumulation, clipping before each step, the last partial
    accumulation window still stepping with its loss averaged over the micro-batches it has (HF
    v5's current_gradient_accumulation_steps). Returns the per-micro-batch losses."""
    decay = [p for n, p in model.named_parameters() if not n.endswith("bias") and not n.startswith("norm")]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or n.startswith("norm")]
    # v5's default optimizer is the fused AdamW kernel (torch >= 2.8), the trainer's default here too
    fused = default_optimizer_name() == "adamw_torch_fused"
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.999), eps=1e-8,
                                  fused=fused)
    batches_per_epoch = math.ceil(len(dataset) / batch_size)
    updates_per_epoch = math.ceil(batches_per_epoch / accumulation)
    total = updates_per_epoch * epochs

    def factor(step):
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total - step) / max(1, total - warmup_steps))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    losses = []
    for epoch in range(epochs):
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed + epoch))
        batches = [order[i:i + batch_size] for i in range(0, len(dataset), batch_size)]
        for start in range(0, len(batches), accumulation):
            window = batches[start:start + accumulation]
            for index in window:
                loss = model(dataset.x[index], dataset.y[index])["loss"] / len(window)
                loss.backward()
                losses.append(loss.item())
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            scheduler.step()
            model.zero_grad()
    return losses


def test_parameters_match_bare_loop_bit_for_bit(make_args):
    torch.manual_seed(0)
    model = RegressionModel()
    reference = copy.deepcopy(model)
    dataset = RegressionDataset(40)  # 10 batches of 4 -> windows of 3, 3, 3, 1
    args = make_args(learning_rate=0.05, weight_decay=0.1, warmup_steps=2, num_train_epochs=2,
                     gradient_accumulation_steps=3, max_grad_norm=0.5, seed=7, logging_steps=2)
    trainer = Trainer(model=model, args=args, train_dataset=dataset)
    output = trainer.train()
    losses = bare_loop(reference, dataset, lr=0.05, weight_decay=0.1, warmup_steps=2, epochs=2,
                       batch_size=4, accumulation=3, max_grad_norm=0.5, seed=7)

    assert output.global_step == 8 and trainer.state.max_steps == 8
    for (name, trained), expected in zip(trainer.model.named_parameters(), reference.parameters()):
        assert torch.equal(trained, expected), name
    assert trainer.model is model  # local mode trains the user's own object
    # the logged loss of a step is the sum of its micro-batches' (loss / window size)
    step_losses = _per_step_sums(losses, batches_per_epoch=10, accumulation=3, epochs=2)
    logged = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    expected_logged = [(step_losses[i] + step_losses[i + 1]) / 2 for i in range(0, 8, 2)]
    assert logged == pytest.approx(expected_logged, rel=1e-6)
    assert output.training_loss == pytest.approx(sum(step_losses) / 8, rel=1e-6)


def _per_step_sums(losses, batches_per_epoch, accumulation, epochs):
    sums, i = [], 0
    for _ in range(epochs):
        remaining = batches_per_epoch
        while remaining:
            take = min(accumulation, remaining)
            sums.append(sum(losses[i:i + take]))
            i += take
            remaining -= take
    return sums


def test_learning_rate_log_follows_linear_warmup_formula(make_args):
    args = make_args(learning_rate=0.1, warmup_steps=3, max_steps=10, logging_steps=1)
    trainer = Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(16))
    trainer.train()
    lrs = [e["learning_rate"] for e in trainer.state.log_history if "learning_rate" in e]
    # the rate each step used (HF v5): step s (1-based) ran with lr * factor(s - 1)
    expected = [0.1 * (s / 3 if s < 3 else (10 - s) / 7) for s in range(0, 10)]
    assert lrs == pytest.approx(expected, abs=1e-12)


def test_warmup_ratio_and_fractional_epochs(make_args):
    args = make_args(num_train_epochs=1.5, warmup_ratio=0.25, learning_rate=0.2)
    trainer = Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(32))
    trainer.train()
    # 8 batches per epoch, 1.5 epochs -> 12 steps; warmup ceil(12 * 0.25) = 3
    assert trainer.state.global_step == 12
    assert trainer.state.epoch == pytest.approx(1.5)
    lrs = [e["learning_rate"] for e in trainer.state.log_history if "learning_rate" in e]
    assert lrs[:4] == pytest.approx([0.0, 0.2 / 3, 0.4 / 3, 0.2])


def test_max_steps_overrides_epochs_and_epoch_fraction(make_args):
    args = make_args(max_steps=5, num_train_epochs=100)
    trainer = Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(12))
    output = trainer.train()
    assert output.global_step == 5
    assert trainer.state.num_train_epochs == 2  # 3 steps per epoch -> 2 epochs touched
    assert trainer.state.epoch == pytest.approx(5 / 3)
    assert [e["step"] for e in trainer.state.log_history if "loss" in e] == [1, 2, 3, 4, 5]
    final = trainer.state.log_history[-1]
    assert final["train_loss"] == pytest.approx(output.training_loss)
    assert {"train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos"} <= set(final)


class EventRecorder(TrainerCallback):
    def __init__(self):
        self.events = []

    def __getattribute__(self, name):
        if name.startswith("on_"):
            events = object.__getattribute__(self, "events")
            return lambda args, state, control, **kw: events.append((name, state.global_step))
        return object.__getattribute__(self, name)


def test_callback_events_in_hf_order(make_args):
    recorder = EventRecorder()
    args = make_args(num_train_epochs=1, gradient_accumulation_steps=2, logging_steps=2,
                     eval_strategy="epoch", per_device_eval_batch_size=8)
    data = RegressionDataset(12)  # 3 batches -> windows [2, 1]
    trainer = Trainer(model=RegressionModel(), args=args, train_dataset=data, eval_dataset=RegressionDataset(8),
                      callbacks=[recorder])
    trainer.train()
    assert recorder.events == [
        ("on_init_end", 0), ("on_train_begin", 0), ("on_epoch_begin", 0),
        ("on_step_begin", 0), ("on_substep_end", 0), ("on_pre_optimizer_step", 0),
        ("on_optimizer_step", 0), ("on_step_end", 1),
        ("on_step_begin", 1), ("on_pre_optimizer_step", 1), ("on_optimizer_step", 1),
        ("on_step_end", 2), ("on_log", 2),
        ("on_epoch_end", 2), ("on_prediction_step", 2), ("on_log", 2), ("on_evaluate", 2),
        ("on_log", 2), ("on_train_end", 2),
    ]


def test_num_items_in_batch_counts_label_tokens_of_the_whole_window(make_args):
    model = TokenModel()
    data = TokenDataset(8)
    args = make_args(per_device_train_batch_size=2, gradient_accumulation_steps=2, max_steps=2,
                     data_seed=3)
    trainer = Trainer(model=model, args=args, train_dataset=data)
    trainer.train()
    order = torch.randperm(8, generator=torch.Generator().manual_seed(3)).tolist()
    counts = [int((data[i]["labels"] != -100).sum()) for i in order]
    window = [sum(counts[0:4]), sum(counts[4:8])]
    # the constructor's probe comes first: once without a count, then with the first example's
    # label tokens and twice that (it measures that the loss divides by it); then 2 windows x 2
    first = int((data[0]["labels"] != -100).sum())
    assert model.seen_num_items[:3] == [None, first, 2 * first]
    assert model.seen_num_items[3:] == [window[0], window[0], window[1], window[1]]


def test_logging_nan_inf_filter_replaces_bad_losses(make_args):
    clean = []

    class NaNAtSecondStep(RegressionModel):
        def forward(self, x, labels=None):
            out = super().forward(x, labels)
            if labels is not None and self.training:
                clean.append(out["loss"].item())
                if len(clean) == 2:  # a NaN that does not reach the gradients
                    out["loss"] = out["loss"] + torch.tensor(float("nan"))
            return out

    args = make_args(max_steps=3, logging_steps=3)
    trainer = Trainer(model=NaNAtSecondStep(), args=args, train_dataset=RegressionDataset(12))
    trainer.train()
    logged = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    # step 2's loss is replaced by the running mean of the window so far: clean[0] / 2
    assert logged == pytest.approx([(clean[0] + clean[0] / 2 + clean[2]) / 3], rel=1e-6)
