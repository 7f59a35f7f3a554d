"""The compatibility features on real Ray Train workers (2 CPU workers, gloo): a v4-spelled script,
v5 fields that reach DDP and the sampler, memory metrics measured where the loop runs, early
stopping without load_best_model_at_end, training_args.bin in Ray's checkpoints."""

import os
import warnings

import pytest
import torch
from conftest import RegressionDataset, RegressionModel
from ray.train import ScalingConfig

from raytrainer import EarlyStoppingCallback, Trainer, TrainingArguments



class Tokenizer:
    """Stands in for a processing class; importable on the workers (tests/ is on their path)."""

    pad_token_id = 0


@pytest.mark.slow
@pytest.mark.usefixtures("ray_instance")
def test_a_v4_script_with_v5_fields_on_two_workers(tmp_path):
    scores = iter([0.5, 0.4, 0.45, 0.44, 0.43, 0.42])  # rank 0 computes the metrics, each worker has a copy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        args = TrainingArguments(
            output_dir=str(tmp_path), evaluation_strategy="steps", eval_steps=2, save_steps=2,
            per_gpu_train_batch_size=2, per_device_eval_batch_size=4, max_steps=12, logging_steps=2,
            metric_for_best_model="score", greater_is_better=False, skip_memory_metrics=False,
            ddp_static_graph=True, ddp_find_unused_parameters=False, train_sampling_strategy="sequential",
            disable_tqdm=True, report_to="none", seed=3)
        trainer = Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(32),
                          eval_dataset=RegressionDataset(8), tokenizer=Tokenizer(),
                          compute_metrics=lambda p: {"score": next(scores)},
                          callbacks=[EarlyStoppingCallback(early_stopping_patience=2)],
                          scaling_config=ScalingConfig(num_workers=2))
    output = trainer.train()
    # scores 0.5, 0.4 (best), 0.45, 0.44: two evaluations without improvement stop it at step 8
    assert output.global_step == 8
    assert {"train_mem_cpu_alloc_delta", "train_mem_cpu_peaked_delta", "init_mem_cpu_alloc_delta",
            "before_init_mem_cpu"} <= set(output.metrics)
    assert output.metrics["before_init_mem_cpu"] > 50 * 2**20  # a worker process with torch loaded
    folder = tmp_path / "checkpoint-8"
    assert {"training_args.bin", "training_args.json", "rng_state_1.pth"} <= set(os.listdir(folder))
    saved = torch.load(folder / "training_args.bin", weights_only=False)
    assert saved.eval_strategy == "steps" and saved.per_device_train_batch_size == 2
    assert saved.ddp_static_graph is True and saved.train_sampling_strategy == "sequential"
    assert trainer.processing_class.pad_token_id == 0
