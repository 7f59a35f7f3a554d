"""Every bad input fails in a constructor, before any training, naming the argument and the fix."""

import pytest
import torch
from conftest import NoLossModel, RegressionDataset, RegressionModel
from ray.train import ScalingConfig

from raytrainer import EarlyStoppingCallback, Trainer, TrainingArguments


class Stream(torch.utils.data.IterableDataset):
    def __iter__(self):
        for i in range(8):
            yield {"x": torch.ones(4) * i, "labels": torch.ones(1)}


def test_model_that_returns_no_loss_fails_in_constructor(make_args):
    with pytest.raises(ValueError, match="did not return a loss: its output has only the keys \\['logits'\\]"):
        Trainer(model=NoLossModel(), args=make_args(), train_dataset=RegressionDataset(8))


def test_unknown_names_fail_in_training_arguments(tmp_path):
    with pytest.raises(ValueError, match="eval_strategy"):
        TrainingArguments(output_dir=str(tmp_path), eval_strategy="sometimes")
    with pytest.raises(ValueError, match="lr_scheduler_type"):
        TrainingArguments(output_dir=str(tmp_path), lr_scheduler_type="zigzag")
    with pytest.raises(ValueError, match="optim"):
        TrainingArguments(output_dir=str(tmp_path), optim="adamw_magic")


def test_load_best_model_with_mismatched_strategies(tmp_path):
    with pytest.raises(ValueError, match="load_best_model_at_end"):
        TrainingArguments(output_dir=str(tmp_path), load_best_model_at_end=True, eval_strategy="epoch",
                          save_strategy="steps")


def test_optimizers_with_model_init_is_refused(make_args):
    model = RegressionModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match="optimizers= cannot be combined with model_init="):
        Trainer(model_init=RegressionModel, args=make_args(), optimizers=(optimizer, None))


def test_optimizers_together_with_optimizer_cls_and_kwargs(make_args):
    model = RegressionModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match="either optimizers= or optimizer_cls_and_kwargs="):
        Trainer(model=model, args=make_args(), optimizers=(optimizer, None),
                optimizer_cls_and_kwargs=(torch.optim.SGD, {"lr": 0.1}))


def test_dataset_without_length_needs_max_steps(make_args):
    with pytest.raises(ValueError, match="set TrainingArguments.max_steps"):
        Trainer(model=RegressionModel(), args=make_args(), train_dataset=Stream())
    trainer = Trainer(model=RegressionModel(), args=make_args(max_steps=3), train_dataset=Stream())
    assert trainer.train().global_step == 3


def test_eval_strategy_without_eval_dataset(make_args):
    with pytest.raises(ValueError, match="eval_strategy='steps' needs an eval_dataset"):
        Trainer(model=RegressionModel(), args=make_args(eval_strategy="steps"), train_dataset=RegressionDataset(8))


def test_missing_model(make_args):
    with pytest.raises(ValueError, match="pass a model or a model_init"):
        Trainer(args=make_args())
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        Trainer(model=lambda x: x, args=make_args())


def test_unsupported_optimizer_and_scheduler_kwargs(make_args):
    with pytest.raises(ValueError, match="optim"):
        Trainer(model=RegressionModel(), args=make_args(optim="adamw_bnb_8bit"))
    with pytest.raises(ValueError, match="cosine"):
        Trainer(model=RegressionModel(), args=make_args(lr_scheduler_type="cosine", lr_scheduler_kwargs={"bogus": 1}))


def test_reduce_on_plateau_needs_evaluation(make_args):
    with pytest.raises(ValueError, match="reduce_lr_on_plateau"):
        Trainer(model=RegressionModel(), args=make_args(lr_scheduler_type="reduce_lr_on_plateau"))


def test_fp16_on_cpu_suggests_bf16(make_args):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="fp16=True needs a CUDA device.*bf16=True"):
        Trainer(model=RegressionModel(), args=make_args(fp16=True), train_dataset=RegressionDataset(8))


def test_gradient_checkpointing_and_neftune_need_model_support(make_args):
    with pytest.raises(ValueError, match="gradient_checkpointing_enable"):
        Trainer(model=RegressionModel(), args=make_args(gradient_checkpointing=True))
    with pytest.raises(ValueError, match="get_input_embeddings"):
        Trainer(model=RegressionModel(), args=make_args(neftune_noise_alpha=5.0))


def test_early_stopping_needs_best_model_settings(make_args):
    with pytest.raises(ValueError, match="EarlyStoppingCallback needs TrainingArguments.metric_for_best_model"):
        Trainer(model=RegressionModel(), args=make_args(), callbacks=[EarlyStoppingCallback()])


def test_bad_callbacks_and_metrics(make_args):
    with pytest.raises(TypeError, match="callbacks must be TrainerCallback"):
        Trainer(model=RegressionModel(), args=make_args(), callbacks=[object()])
    with pytest.raises(TypeError, match="compute_metrics must be callable"):
        Trainer(model=RegressionModel(), args=make_args(), compute_metrics="accuracy")
    with pytest.raises(ValueError, match="compute_result"):
        Trainer(model=RegressionModel(), args=make_args(batch_eval_metrics=True), compute_metrics=lambda p: {})


def test_ray_configs_are_type_checked(make_args):
    with pytest.raises(TypeError, match="scaling_config must be a ray.train.ScalingConfig"):
        Trainer(model=RegressionModel(), args=make_args(), scaling_config={"num_workers": 2})
    with pytest.raises(TypeError, match="run_config must be a ray.train.RunConfig"):
        Trainer(model=RegressionModel(), args=make_args(), run_config="fast")
    assert Trainer(model=RegressionModel(), args=make_args(), scaling_config=ScalingConfig(num_workers=0))


def test_tuple_items_get_a_clear_error(make_args):
    data = torch.utils.data.TensorDataset(torch.randn(8, 4), torch.randn(8, 1))
    with pytest.raises(TypeError, match="train_dataset items must be dicts"):
        Trainer(model=RegressionModel(), args=make_args(), train_dataset=data)


def test_unused_columns_removed_and_kept_when_disabled(make_args):
    data = RegressionDataset(8, extra_column=True)
    trainer = Trainer(model=RegressionModel(), args=make_args(max_steps=1), train_dataset=data)
    assert trainer.train().global_step == 1
    with pytest.raises(TypeError, match="weight"):
        Trainer(model=RegressionModel(), args=make_args(remove_unused_columns=False), train_dataset=data)


def test_default_scaling_is_local_mode_off_cluster(monkeypatch):
    from raytrainer.runtime.scaling import is_local_mode, resolve_scaling_config

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert resolve_scaling_config(None).num_workers == 0 and is_local_mode(None)
    explicit = ScalingConfig(num_workers=3)
    assert resolve_scaling_config(explicit) is explicit and not is_local_mode(explicit)
