"""FSDP2 in one process (a single-rank group): the same maths as no sharding, sharded checkpoints
that resume exactly, the best model, consolidated weights that load into the plain model."""

import os

import pytest
import torch
from conftest import RegressionDataset, RegressionModel, RunsCode, assert_same_logs

from raytrainer import Trainer
from raytrainer.checkpoints.weights import load_weights


def _full(model):
    return {name: getattr(t, "full_tensor", lambda t=t: t)().detach().clone() for name, t in model.state_dict().items()}


def _trainer(make_args, model, **overrides):
    options = dict(max_steps=6, logging_steps=2, learning_rate=0.05, save_strategy="steps", save_steps=3, seed=3)
    options.update(overrides)
    return Trainer(model=model, args=make_args(**options), train_dataset=RegressionDataset(32),
                   eval_dataset=RegressionDataset(10, seed=4))


def test_fsdp_trains_like_plain_and_resumes_exactly_from_its_shards(make_args, tmp_path):
    torch.manual_seed(0)
    model, reference, resumed = RegressionModel(), RegressionModel(), RegressionModel()
    reference.load_state_dict(model.state_dict())
    resumed.load_state_dict(model.state_dict())
    sharded = _trainer(make_args, model, fsdp="full_shard", fsdp_config={"transformer_layer_cls_to_wrap": ["Linear"]})
    sharded.train()
    plain = _trainer(make_args, reference, output_dir=str(tmp_path / "plain"))
    plain.train()
    weights = _full(model)
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(weights[name], value, rtol=0, atol=1e-6, msg=name)
    assert [e.get("loss") for e in sharded.state.log_history] == [e.get("loss") for e in plain.state.log_history]

    folder = os.path.join(sharded.args.output_dir, "checkpoint-3")
    files = set(os.listdir(folder))
    assert {"pytorch_model_fsdp_0", "optimizer_0", "scheduler.pt", "trainer_state.json", "rng_state.pth"} <= files
    assert "model.safetensors" not in files and "optimizer.pt" not in files  # SHARDED_STATE_DICT: shards only
    assert {".metadata", "__0_0.distcp"} <= set(os.listdir(os.path.join(folder, "pytorch_model_fsdp_0")))

    again = _trainer(make_args, resumed, fsdp="full_shard")  # no layer classes: one unit, same parameter names
    again.train(resume_from_checkpoint=folder)
    for name, value in _full(resumed).items():
        torch.testing.assert_close(value, weights[name], rtol=0, atol=0, msg=name)
    assert again.state.global_step == 6

    sharded.save_model(str(tmp_path / "saved"))  # consolidated: loads into the plain model
    plain_copy = RegressionModel()
    load_weights(plain_copy, str(tmp_path / "saved"))
    for name, value in plain_copy.state_dict().items():
        torch.testing.assert_close(value, weights[name], rtol=0, atol=0, msg=name)
    assert sharded.evaluate()["eval_loss"] == pytest.approx(plain.evaluate()["eval_loss"], rel=1e-6)


def test_fsdp_best_model_and_full_state_dict_checkpoints(make_args, tmp_path):
    torch.manual_seed(1)
    model = RegressionModel()
    trainer = _trainer(make_args, model, fsdp="shard_grad_op auto_wrap", max_steps=4, save_steps=1, greater_is_better=True,
                       eval_strategy="steps", eval_steps=1, load_best_model_at_end=True,
                       metric_for_best_model="loss", fsdp_config={"min_num_params": 30,
                                                                  "state_dict_type": "FULL_STATE_DICT"})
    trainer.train()
    best = trainer.state.best_model_checkpoint
    assert best is not None and trainer.state.best_global_step < 4  # the worst loss "wins": an early step
    assert "model.safetensors" in os.listdir(best)  # FULL_STATE_DICT: the consolidated copy beside the shards
    from_file = RegressionModel()
    load_weights(from_file, best)
    weights = _full(model)
    for name, value in from_file.state_dict().items():  # the best weights were loaded at the end
        torch.testing.assert_close(weights[name], value, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_trains_like_plain_and_resumes_exactly(make_args, tmp_path, stage, monkeypatch):
    pytest.importorskip("deepspeed", reason="DeepSpeed is an optional extra: pip install 'raytrainer[deepspeed]'")
    import deepspeed.ops

    # On a CPU DeepSpeed JIT-compiles a shared-memory all-reduce op (C++, ~1 min on 2 cores) behind a
    # file lock that a killed build leaves behind, and every later run then waits on it forever. A
    # one-rank group has nothing to all-reduce between processes: tell DeepSpeed the op is unavailable.
    monkeypatch.setitem(deepspeed.ops.__compatible_ops__, "deepspeed_shm_comm", False)
    torch.manual_seed(0)
    model, reference, resumed = RegressionModel(), RegressionModel(), RegressionModel()
    reference.load_state_dict(model.state_dict())
    resumed.load_state_dict(model.state_dict())
    config = {"zero_optimization": {"stage": stage}, "train_micro_batch_size_per_gpu": "auto",
              "gradient_accumulation_steps": "auto", "gradient_clipping": "auto"}
    plain = _trainer(make_args, reference, output_dir=str(tmp_path / "plain"), gradient_accumulation_steps=2)
    plain.train()
    zero = _trainer(make_args, model, deepspeed=config, gradient_accumulation_steps=2)
    zero.train()
    assert_same_logs(zero.state.log_history[:-1], plain.state.log_history[:-1], ("loss", "grad_norm", "learning_rate"))
    assert {"global_step3", "latest", "scheduler.pt"} <= set(os.listdir(os.path.join(zero.args.output_dir, "checkpoint-3")))
    zero.save_model(str(tmp_path / "saved"))
    saved = RegressionModel()
    load_weights(saved, str(tmp_path / "saved"))
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(saved.state_dict()[name], value, rtol=0, atol=1e-6, msg=name)
    again = _trainer(make_args, resumed, deepspeed=config, gradient_accumulation_steps=2)
    again.train(resume_from_checkpoint=os.path.join(zero.args.output_dir, "checkpoint-3"))
    again.save_model(str(tmp_path / "again"))
    from_resume = RegressionModel()
    load_weights(from_resume, str(tmp_path / "again"))
    for name, value in saved.state_dict().items():
        torch.testing.assert_close(from_resume.state_dict()[name], value, rtol=0, atol=0, msg=name)


def test_deepspeed_passes_float_inputs_in_the_engines_dtype(make_args):
    from raytrainer.parallel.deepspeed import DeepSpeedStrategy

    batch = {"x": torch.ones(2, 3, dtype=torch.float64), "ids": torch.arange(2), "mask": torch.ones(2, dtype=torch.bool),
             "pair": [torch.zeros(1), (torch.zeros(1, dtype=torch.float16), "text")]}
    bf16 = DeepSpeedStrategy(make_args(bf16=True, deepspeed={"zero_optimization": {"stage": 2}})).prepare_inputs(batch)
    assert (bf16["x"].dtype, bf16["ids"].dtype, bf16["mask"].dtype) == (torch.bfloat16, torch.int64, torch.bool)
    assert (bf16["pair"][0].dtype, bf16["pair"][1][0].dtype, bf16["pair"][1][1]) == (torch.bfloat16, torch.bfloat16, "text")
    assert torch.equal(bf16["x"], torch.ones(2, 3, dtype=torch.bfloat16)) and torch.equal(bf16["ids"], batch["ids"])
    fp32 = DeepSpeedStrategy(make_args(deepspeed={"zero_optimization": {"stage": 2}})).prepare_inputs(batch)
    assert (fp32["x"].dtype, fp32["pair"][1][0].dtype, fp32["ids"].dtype) == (torch.float32, torch.float32, torch.int64)


def test_deepspeed_bf16_trains_on_float_inputs_like_fp32(make_args, tmp_path, monkeypatch):
    """The engine holds the weights in bf16 and, unlike autocast, casts no inputs: float features
    (not token ids) must reach it in bf16, as the HF Trainer passes them. Before, the first step
    failed ("mat1 and mat2 must have the same dtype")."""
    pytest.importorskip("deepspeed", reason="DeepSpeed is an optional extra: pip install 'raytrainer[deepspeed]'")
    import deepspeed.ops

    monkeypatch.setitem(deepspeed.ops.__compatible_ops__, "deepspeed_shm_comm", False)  # see the test above
    torch.manual_seed(0)
    model, reference = RegressionModel(), RegressionModel()
    reference.load_state_dict(model.state_dict())
    config = {"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": "auto",
              "gradient_accumulation_steps": "auto", "gradient_clipping": "auto", "bf16": {"enabled": "auto"}}
    zero = _trainer(make_args, model, deepspeed=config, bf16=True, save_strategy="no", output_dir=str(tmp_path / "zero"))
    plain = _trainer(make_args, reference, save_strategy="no", output_dir=str(tmp_path / "plain"))
    zero.train()
    plain.train()
    losses = [[entry["loss"] for entry in trainer.state.log_history if "loss" in entry] for trainer in (zero, plain)]
    assert len(losses[0]) == len(losses[1]) == 3
    assert losses[0] == pytest.approx(losses[1], rel=2e-2)  # bf16 weights and inputs: within bf16's precision
    assert zero.evaluate()["eval_loss"] == pytest.approx(plain.evaluate()["eval_loss"], rel=2e-2)


@pytest.fixture(autouse=True, scope="module")
def _one_rank_group_ends_with_the_module():
    """A local sharded run keeps its one-rank process group for later evaluations and saves; other
    test modules (transformers/accelerate comparisons) must not find it."""
    had_local_rank = "LOCAL_RANK" in os.environ
    yield
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    if not had_local_rank:
        os.environ.pop("LOCAL_RANK", None)  # set for DeepSpeed's one-rank runs


def test_a_deepspeed_checkpoint_that_carries_code_is_refused_on_resume(make_args, tmp_path, monkeypatch):
    """DeepSpeed unpickles its checkpoint files; on resume they are read weights-only, with the
    DeepSpeed classes its ZeRO checkpoints hold allowed (the first resume loads a real one)."""
    pytest.importorskip("deepspeed", reason="DeepSpeed is an optional extra: pip install 'raytrainer[deepspeed]'")
    import pickle

    import deepspeed.ops

    monkeypatch.setitem(deepspeed.ops.__compatible_ops__, "deepspeed_shm_comm", False)  # see the test above
    config = {"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": "auto"}
    first = _trainer(make_args, RegressionModel(), deepspeed=config, max_steps=3, bf16=True)
    first.train()
    folder = os.path.join(first.args.output_dir, "checkpoint-3")
    resumed = _trainer(make_args, RegressionModel(), deepspeed=config, max_steps=4, bf16=True)
    resumed.train(resume_from_checkpoint=folder)  # LossScaler, ZeroStageEnum, fragment_address: allowed
    assert resumed.state.global_step == 4

    states = os.path.join(folder, "global_step3", "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt")
    marker = str(tmp_path / "ran")
    tampered = torch.load(states, weights_only=False)
    tampered["evil"] = RunsCode(marker)
    torch.save(tampered, states)
    with pytest.raises(pickle.UnpicklingError, match=r"Refusing to load .*optim_states\.pt: .*could run code"):
        _trainer(make_args, RegressionModel(), deepspeed=config, max_steps=4, bf16=True).train(resume_from_checkpoint=folder)
    assert not os.path.exists(marker)
    torch.load(states, weights_only=False)  # what DeepSpeed's own load would have done
    assert os.path.exists(marker)
