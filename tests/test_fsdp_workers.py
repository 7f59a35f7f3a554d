"""FSDP2 on 2 Ray Train workers (gloo): the weights of data parallelism, shards written by every
rank, the consolidated final model, evaluation on the workers, resuming on 1 worker (resharding)."""

import os

import pytest
import torch
from conftest import RegressionDataset, RegressionModel
from ray.train import ScalingConfig

from raytrainer import Trainer, TrainingArguments
from raytrainer.checkpoints.weights import load_weights

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_instance")]


def _args(out, batch, **overrides):
    options = dict(output_dir=str(out), per_device_train_batch_size=batch, per_device_eval_batch_size=3,
                   num_train_epochs=2, logging_steps=2, save_strategy="epoch", seed=5, learning_rate=0.05,
                   disable_tqdm=True, report_to="none")
    options.update(overrides)
    return TrainingArguments(**options)


def test_fsdp_on_two_workers_trains_like_data_parallelism_and_resumes_on_one(tmp_path):
    torch.manual_seed(0)
    model, reference, resumed = RegressionModel(), RegressionModel(), RegressionModel()
    reference.load_state_dict(model.state_dict())
    resumed.load_state_dict(model.state_dict())
    initial = {name: t.clone() for name, t in model.state_dict().items()}
    train, dev = RegressionDataset(40), RegressionDataset(13, seed=4)  # 13: uneven eval shards (7 and 6)
    fsdp = dict(fsdp="full_shard", fsdp_config={"transformer_layer_cls_to_wrap": "Linear",
                                                "cpu_ram_efficient_loading": True, "forward_prefetch": True,
                                                "backward_prefetch": "backward_pre"})
    sharded = Trainer(model=model, args=_args(tmp_path / "fsdp", 4, **fsdp), train_dataset=train,
                      scaling_config=ScalingConfig(num_workers=2))
    output = sharded.train()
    # one process with twice the batch: what 2-worker DDP trains (tests/test_distributed.py)
    local = Trainer(model=reference, args=_args(tmp_path / "local", 8), train_dataset=train)
    local_output = local.train()
    assert output.global_step == local_output.global_step == 10
    assert output.training_loss == pytest.approx(local_output.training_loss, rel=1e-5)

    # the driver keeps its own weights; the trained ones are consolidated in final_model/
    final = sharded.final_model_dir
    assert final == str(tmp_path / "fsdp" / "final_model") and "model.safetensors" in os.listdir(final)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, initial[name], rtol=0, atol=0)
    trained = RegressionModel()
    load_weights(trained, final)
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(trained.state_dict()[name], value, rtol=0, atol=1e-6, msg=name)
    # every rank wrote its shard of model and optimizer into the checkpoint
    shards = os.path.join(tmp_path, "fsdp", "checkpoint-5", "pytorch_model_fsdp_0")
    assert {".metadata", "__0_0.distcp", "__1_0.distcp"} <= set(os.listdir(shards))
    assert {".metadata", "__0_0.distcp", "__1_0.distcp"} <= set(os.listdir(shards.replace("pytorch_model_fsdp_0", "optimizer_0")))

    # evaluation on the workers, with the trained shards, every example once (13 over 2 ranks)
    metrics = sharded.evaluate(dev)
    assert metrics["eval_loss"] == pytest.approx(local.evaluate(dev)["eval_loss"], rel=1e-5)
    assert sharded.state.log_history[-1]["eval_loss"] == metrics["eval_loss"]
    sharded.save_model(str(tmp_path / "saved"))  # the consolidated file, copied on the driver
    assert "model.safetensors" in os.listdir(tmp_path / "saved")

    # the 2-worker checkpoint of epoch 1 resumed on 1 worker (the shards are resliced) ends where 2 workers did
    one = Trainer(model=resumed, args=_args(tmp_path / "fsdp", 8, fsdp="full_shard"), train_dataset=train,
                  scaling_config=ScalingConfig(num_workers=1))
    one.train(resume_from_checkpoint=str(tmp_path / "fsdp" / "checkpoint-5"))
    assert one.state.global_step == 10
    again = RegressionModel()
    load_weights(again, one.final_model_dir)
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(again.state_dict()[name], value, rtol=0, atol=1e-6, msg=name)


def test_deepspeed_zero3_on_two_workers_trains_like_data_parallelism(tmp_path):
    pytest.importorskip("deepspeed", reason="DeepSpeed is an optional extra: pip install 'raytrainer[deepspeed]'")
    torch.manual_seed(0)
    model, reference = RegressionModel(), RegressionModel()
    reference.load_state_dict(model.state_dict())
    train, dev = RegressionDataset(40), RegressionDataset(13, seed=4)
    config = {"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": "auto",
              "train_batch_size": "auto", "gradient_accumulation_steps": "auto", "gradient_clipping": "auto"}
    zero = Trainer(model=model, args=_args(tmp_path / "zero3", 4, deepspeed=config, save_strategy="no"),
                   train_dataset=train, scaling_config=ScalingConfig(num_workers=2))
    output = zero.train()
    local = Trainer(model=reference, args=_args(tmp_path / "local", 8, save_strategy="no"), train_dataset=train)
    assert output.training_loss == pytest.approx(local.train().training_loss, rel=1e-5)
    trained = RegressionModel()
    load_weights(trained, zero.final_model_dir)  # ZeRO-3's partitions, gathered into one file
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(trained.state_dict()[name], value, rtol=0, atol=1e-5, msg=name)
    metrics = zero.evaluate(dev)  # on the workers: a ZeRO-3 engine holding the trained weights
    assert metrics["eval_loss"] == pytest.approx(local.evaluate(dev)["eval_loss"], rel=1e-5)
