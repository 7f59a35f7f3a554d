"""Training features: precision, compile, smoothing, NEFTune, checkpoints, best model, overrides."""

import copy
import json
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import ClassificationDataset, ClassifierModel, RegressionDataset, RegressionModel, TokenDataset, TokenModel

from raytrainer import EarlyStoppingCallback, Trainer, TrainerCallback
from raytrainer.data.collators import DataCollatorWithPadding


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


def test_bf16_autocast_runs_forward_in_bfloat16_on_cpu(make_args):
    dtypes = []

    class Probe(RegressionModel):
        def forward(self, x, labels=None):
            out = super().forward(x, labels)
            dtypes.append(out["logits"].dtype)
            return out

    trainer = Trainer(model=Probe(), args=make_args(bf16=True, max_steps=2), train_dataset=RegressionDataset(8))
    trainer.train()
    assert dtypes[-1] == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # master weights stay fp32


def test_torch_compile_trains_to_the_same_weights(make_args):
    torch.manual_seed(0)
    model = RegressionModel()
    twin = copy.deepcopy(model)
    data = RegressionDataset(16)
    Trainer(model=model, args=make_args(max_steps=3), train_dataset=data).train()
    compiled = Trainer(model=twin, args=make_args(max_steps=3, torch_compile=True, torch_compile_backend="eager"),
                       train_dataset=data)
    compiled.train()
    assert compiled.model is twin and compiled.model_wrapped is not twin
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b)


def test_label_smoothing_loss_matches_formula(make_args):
    model, data = ClassifierModel(), ClassificationDataset(12)
    trainer = Trainer(model=model, args=make_args(label_smoothing_factor=0.2))
    metrics = trainer.evaluate(data)
    with torch.no_grad():
        logits = model.linear(data.x)
    batches = [(logits[i:i + 8], data.labels[i:i + 8]) for i in range(0, 12, 8)]
    expected = [F.cross_entropy(lg, lb, label_smoothing=0.2).item() for lg, lb in batches]
    assert metrics["eval_loss"] == pytest.approx((expected[0] * 8 + expected[1] * 4) / 12, rel=1e-5)


def test_neftune_noise_only_during_training(make_args):
    model = TokenModel()
    trainer = Trainer(model=model, args=make_args(neftune_noise_alpha=5.0, max_steps=1, per_device_train_batch_size=2),
                      train_dataset=TokenDataset(4))
    clean, noisy = [], []
    # registered before training, so it runs before NEFTune's hook: the embedding without noise
    embed_hook = model.embed.register_forward_hook(lambda m, i, o: clean.append(o.detach().clone()))
    head_hook = model.head.register_forward_pre_hook(lambda m, i: noisy.append(i[0].detach().clone()))
    trainer.train()
    embed_hook.remove()
    head_hook.remove()
    assert len(clean) == len(noisy) == 1  # one training forward
    noise = noisy[0] - clean[0]
    seq_len, dim = clean[0].shape[1], clean[0].shape[2]
    bound = 5.0 / (seq_len * dim) ** 0.5  # uniform noise in [-alpha/sqrt(L*d), alpha/sqrt(L*d)]
    assert 0.5 * bound < noise.abs().max() <= bound + 1e-6
    assert noise.abs().mean() > 0.25 * bound  # every position got noise, not just a few
    ids = torch.tensor([[1, 2, 3]])
    model.train()
    assert torch.equal(model.head(model.embed(ids)), model.head(model.embed(ids)))  # the noise hook is gone


def test_gradient_checkpointing_is_enabled_with_kwargs(make_args):
    calls = []

    class Checkpointable(RegressionModel):
        def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None):
            calls.append(gradient_checkpointing_kwargs)

    args = make_args(gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": False}, max_steps=1)
    Trainer(model=Checkpointable(), args=args, train_dataset=RegressionDataset(8)).train()
    assert calls == [{"use_reentrant": False}]


def test_checkpoints_in_hf_layout_with_rotation(make_args, tmp_path):
    args = make_args(max_steps=6, save_strategy="steps", save_steps=2, save_total_limit=2)
    trainer = Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(16))
    trainer.train()
    out = args.output_dir
    assert sorted(os.listdir(out)) == ["checkpoint-4", "checkpoint-6"]
    files = set(os.listdir(os.path.join(out, "checkpoint-6")))
    assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json",
            "training_args.json"} <= files
    state = json.load(open(os.path.join(out, "checkpoint-6", "trainer_state.json")))
    assert state["global_step"] == 6 and state["max_steps"] == 6 and state["save_steps"] == 2
    from safetensors.torch import load_file

    saved = load_file(os.path.join(out, "checkpoint-6", "model.safetensors"))
    torch.testing.assert_close(saved["fc1.weight"], trainer.model.fc1.weight.detach())


def test_resume_from_checkpoint_matches_an_uninterrupted_run(make_args):
    torch.manual_seed(0)
    model = RegressionModel()
    twin = copy.deepcopy(model)
    data = RegressionDataset(24)
    full = Trainer(model=model, args=make_args(num_train_epochs=2), train_dataset=data)
    full.train()
    args = make_args(num_train_epochs=2, save_strategy="steps", save_steps=4)
    first = Trainer(model=twin, args=args, train_dataset=data)
    first.train()
    resumed_model = RegressionModel()
    resumed = Trainer(model=resumed_model, args=args, train_dataset=data)
    resumed.train(resume_from_checkpoint=os.path.join(args.output_dir, "checkpoint-8"))
    assert resumed.state.global_step == 12
    for a, b in zip(model.parameters(), resumed_model.parameters()):
        assert torch.equal(a, b)


def test_early_stopping_and_load_best_model_at_end(make_args):
    class Scripted(TrainerCallback):
        """Feeds a fixed metric sequence: best at step 2, then no improvement."""

    values = iter([0.5, 0.3, 0.4, 0.45, 0.6, 0.7])

    def metric(pred):
        return {"score": next(values)}

    args = make_args(max_steps=12, eval_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=2,
                     load_best_model_at_end=True, metric_for_best_model="score", greater_is_better=False,
                     per_device_eval_batch_size=8)
    trainer = Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(16),
                      eval_dataset=RegressionDataset(8), compute_metrics=metric,
                      callbacks=[EarlyStoppingCallback(early_stopping_patience=2), Scripted()])
    trainer.train()
    assert trainer.state.global_step == 8  # best at 4, no improvement at 6 and 8 -> stop
    assert trainer.state.best_metric == 0.3 and trainer.state.best_global_step == 4
    assert trainer.state.best_model_checkpoint.endswith("checkpoint-4")
    from safetensors.torch import load_file

    best = load_file(os.path.join(trainer.state.best_model_checkpoint, "model.safetensors"))
    torch.testing.assert_close(trainer.model.fc1.weight.detach(), best["fc1.weight"])


def test_save_strategy_best_saves_only_improvements(make_args):
    values = iter([0.5, 0.6, 0.4, 0.45])
    args = make_args(max_steps=8, eval_strategy="steps", eval_steps=2, save_strategy="best",
                     metric_for_best_model="score", greater_is_better=False)
    trainer = Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(16),
                      eval_dataset=RegressionDataset(8), compute_metrics=lambda p: {"score": next(values)})
    trainer.train()
    assert sorted(os.listdir(args.output_dir)) == ["checkpoint-2", "checkpoint-6"]


def test_save_model_metrics_and_state(make_args, capsys):
    trainer = Trainer(model=RegressionModel(), args=make_args(max_steps=2), train_dataset=RegressionDataset(8))
    output = trainer.train()
    trainer.save_model()
    trainer.save_metrics("train", output.metrics)
    trainer.save_state()
    trainer.log_metrics("train", output.metrics)
    out = trainer.args.output_dir
    assert {"model.safetensors", "training_args.json", "train_results.json", "all_results.json",
            "trainer_state.json"} <= set(os.listdir(out))
    assert json.load(open(os.path.join(out, "train_results.json")))["train_loss"] == output.training_loss
    printed = capsys.readouterr().out
    assert "***** train metrics *****" in printed and "train_runtime" in printed


def test_subclass_overrides_take_effect(make_args):
    class OldStyle(Trainer):
        """An override written before num_items_in_batch existed: a loss that ignores the labels."""

        def compute_loss(self, model, inputs, return_outputs=False):
            outputs = model(**inputs)
            loss = outputs["loss"] * 0 + (outputs["logits"] ** 2).mean()
            return (loss, outputs) if return_outputs else loss

        def create_optimizer(self):
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)
            return self.optimizer

    torch.manual_seed(0)
    model = RegressionModel()
    bare = copy.deepcopy(model)
    data = RegressionDataset(8)
    args = make_args(max_steps=3, per_device_train_batch_size=8, max_grad_norm=0.0, lr_scheduler_type="constant")
    trainer = OldStyle(model=model, args=args, train_dataset=data)
    trainer.train()
    assert isinstance(trainer.optimizer, torch.optim.SGD)
    # the same three full-batch steps by hand, with the override's loss
    optimizer, bare_losses = torch.optim.SGD(bare.parameters(), lr=0.1), []
    for _ in range(3):
        loss = (bare(data.x)["logits"] ** 2).mean()
        bare_losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    logged = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert logged == pytest.approx(bare_losses, rel=1e-5) and bare_losses[-1] < bare_losses[0]
    for ours, theirs in zip(model.parameters(), bare.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_optimizers_tuple_and_optimizer_cls_and_kwargs_are_used(make_args):
    model = RegressionModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    trainer = Trainer(model=model, args=make_args(max_steps=3), train_dataset=RegressionDataset(12),
                      optimizers=(optimizer, scheduler))
    trainer.train()
    assert trainer.optimizer is optimizer
    assert [e["learning_rate"] for e in trainer.state.log_history if "learning_rate" in e] == [0.01, 0.005, 0.0025]
    other = Trainer(model=RegressionModel(), args=make_args(max_steps=1), train_dataset=RegressionDataset(4),
                    optimizer_cls_and_kwargs=(torch.optim.RMSprop, {"lr": 0.02}))
    other.train()
    assert isinstance(other.optimizer, torch.optim.RMSprop) and other.optimizer.defaults["lr"] == 0.02


def test_reduce_lr_on_plateau_steps_on_the_eval_loss(make_args):
    values = iter([1.0, 1.0, 1.0, 1.0])

    args = make_args(max_steps=8, eval_strategy="steps", eval_steps=2, lr_scheduler_type="reduce_lr_on_plateau",
                     lr_scheduler_kwargs={"patience": 0, "factor": 0.5}, metric_for_best_model="score",
                     learning_rate=0.1)
    trainer = Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(16),
                      eval_dataset=RegressionDataset(8), compute_metrics=lambda p: {"score": next(values)})
    trainer.train()
    lrs = [e["learning_rate"] for e in trainer.state.log_history if "learning_rate" in e]
    # evals at 2, 4, 6, 8 see no improvement after the first; step 8 logs before it evaluates
    assert lrs[0] == 0.1 and lrs[-1] == pytest.approx(0.1 * 0.5 ** 2)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 ** 3)


def test_local_mode_keeps_the_users_callback_object(make_args):
    class Counter(TrainerCallback):
        steps = 0

        def on_step_end(self, args, state, control, **kwargs):
            self.steps += 1

    counter = Counter()
    trainer = Trainer(model=RegressionModel(), args=make_args(max_steps=4), train_dataset=RegressionDataset(8),
                      callbacks=[counter])
    trainer.train()
    assert counter.steps == 4
    assert trainer.pop_callback(Counter) is counter
    trainer.add_callback(Counter)
    trainer.remove_callback(Counter)
    assert "Counter" not in trainer.callback_handler.callback_list


def test_tokenizer_processing_class_selects_padding_collator(make_args):
    class Tokenizer:
        def pad(self, features, **kwargs):
            width = max(len(f["input_ids"]) for f in features)
            ids = [list(f["input_ids"]) + [0] * (width - len(f["input_ids"])) for f in features]
            return {"input_ids": torch.tensor(ids)}

    trainer = Trainer(model=TokenModel(), args=make_args(), processing_class=Tokenizer())
    assert isinstance(trainer.data_collator, DataCollatorWithPadding)
    batch = trainer.data_collator([{"input_ids": [1, 2]}, {"input_ids": [3]}])
    assert batch["input_ids"].tolist() == [[1, 2], [3, 0]]


def test_past_index_feeds_mems_back(make_args):
    seen = []

    class Memory(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 1)

        def forward(self, x, labels=None, mems=None):
            seen.append(None if mems is None else float(mems.sum()))
            out = self.linear(x)
            return (F.mse_loss(out, labels), out, torch.ones(()) * len(seen))

    trainer = Trainer(model=Memory(), args=make_args(past_index=2, max_steps=3), train_dataset=RegressionDataset(12))
    trainer.train()
    # probe (no mems), then step 1 without mems, then each step sees the previous step's output
    assert seen[1:] == [None, 2.0, 3.0]


def test_auto_find_batch_size_retries_smaller_after_out_of_memory(make_args):
    sizes = []

    class Greedy(RegressionModel):
        def forward(self, x, labels=None):
            if self.training and labels is not None:
                sizes.append(len(x))
                if len(x) > 6:
                    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return super().forward(x, labels)

    args = make_args(auto_find_batch_size=True, per_device_train_batch_size=8, num_train_epochs=1)
    trainer = Trainer(model=Greedy(), args=args, train_dataset=RegressionDataset(24))
    output = trainer.train()
    # accelerate's search: 8 fails, 7 (= int(8 * 0.9)) fails, 6 fits -> 24 / 6 = 4 steps
    assert sizes[:2] == [8, 7] and set(sizes[2:]) == {6}
    assert output.global_step == 4 and trainer.state.train_batch_size == 6


def test_token_counting_and_tokens_per_second(make_args):
    args = make_args(include_num_input_tokens_seen=True, include_tokens_per_second=True, max_steps=2,
                     per_device_train_batch_size=2)
    trainer = Trainer(model=TokenModel(), args=args, train_dataset=TokenDataset(8))
    output = trainer.train()
    assert trainer.state.num_input_tokens_seen == 2 * 2 * 6
    assert output.metrics["train_tokens_per_second"] > 0
    assert [e["num_input_tokens_seen"] for e in trainer.state.log_history if "loss" in e] == [12, 24]


def test_total_flos_estimates_six_flops_per_parameter_and_example_or_uses_the_models_count(make_args):
    model = RegressionModel()
    trainer = Trainer(model=model, args=make_args(max_steps=3, per_device_train_batch_size=4),
                      train_dataset=RegressionDataset(16))
    output = trainer.train()
    parameters = sum(p.numel() for p in model.parameters())
    assert output.metrics["total_flos"] == trainer.state.total_flos == 6 * parameters * 12  # 3 steps x 4 examples

    class CountsItself(RegressionModel):
        def floating_point_ops(self, inputs):
            return 1000 * len(inputs["x"])

    counted = Trainer(model=CountsItself(), args=make_args(max_steps=2, per_device_train_batch_size=4),
                      train_dataset=RegressionDataset(16))
    assert counted.train().metrics["total_flos"] == 8000


def test_total_flos_counts_tokens_of_integer_inputs_without_embedding_parameters(make_args):
    model = TokenModel()  # embedding 11 x 8 (not counted), head 8 -> 11
    trainer = Trainer(model=model, args=make_args(max_steps=1, per_device_train_batch_size=2),
                      train_dataset=TokenDataset(4))
    trainer.train()
    assert trainer.state.total_flos == 6 * (8 * 11 + 11) * (2 * 6)  # 2 sequences of 6 token ids
