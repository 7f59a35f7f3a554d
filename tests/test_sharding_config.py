"""fsdp/fsdp_config and deepspeed translated before any worker starts: mappings, HF's "auto"
values, and the messages for bad or meaningless options. No Ray, no process group."""

import warnings

import pytest
import torch.nn as nn
from conftest import RegressionDataset, RegressionModel

from raytrainer import Trainer, TrainingArguments
from raytrainer.parallel.deepspeed_config import build_config
from raytrainer.parallel.fsdp import wrapped_units
from raytrainer.parallel.fsdp_config import fsdp_settings


def _args(tmp_path, **overrides):
    return TrainingArguments(output_dir=str(tmp_path), report_to="none", **overrides)


def test_fsdp_options_map_onto_fully_shard(tmp_path):
    settings = fsdp_settings(_args(tmp_path, fsdp="shard_grad_op offload auto_wrap",
                                   fsdp_config={"fsdp_min_num_params": 30, "backward_prefetch": "backward_pre",
                                                "forward_prefetch": "true", "state_dict_type": "FULL_STATE_DICT"}))
    assert (settings.reshard_after_forward, settings.offload, settings.min_num_params) == (False, True, 30)
    assert settings.backward_prefetch and settings.forward_prefetch and settings.full_state_dict
    assert fsdp_settings(_args(tmp_path, fsdp="hybrid_shard")).hybrid
    # accelerate's config-file spelling reads the same
    settings = fsdp_settings(_args(tmp_path, fsdp="shard_grad_op", fsdp_config={
        "fsdp_sharding_strategy": 2, "fsdp_offload_params": True,
        "fsdp_transformer_layer_cls_to_wrap": "BertLayer,BertEmbeddings", "fsdp_version": 2}))
    assert settings.layer_classes == ("BertLayer", "BertEmbeddings") and settings.offload
    assert not settings.reshard_after_forward
    model = RegressionModel()
    units = wrapped_units(model, fsdp_settings(_args(tmp_path, fsdp="full_shard auto_wrap",
                                                     fsdp_config={"min_num_params": 30})))
    assert units == [model.fc1]  # fc1 has 40 parameters; norm (16) and fc2 (9) stay with the root
    with pytest.warns(UserWarning, match="no_shard"):
        assert fsdp_settings(_args(tmp_path, fsdp="no_shard")) is None  # plain data parallelism


def test_fsdp_options_without_meaning_warn_and_bad_ones_fail(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fsdp_settings(_args(tmp_path, fsdp="full_shard", fsdp_config={
            "limit_all_gathers": True, "use_orig_params": False, "backward_prefetch": "backward_post",
            "state_dict_type": "LOCAL_STATE_DICT", "xla_fsdp_grad_ckpt": True, "fsdp_version": 1}))
    text = " | ".join(str(w.message) for w in caught)
    for name in ("limit_all_gathers", "use_orig_params=False", "backward_post", "LOCAL_STATE_DICT",
                 "xla_fsdp_grad_ckpt", "version=1"):
        assert name in text
    cases = [
        ({"typo_key": 1}, r"unknown key\(s\) \['typo_key'\]"),
        ({"xla": True}, "xla=True asks for PyTorch/XLA"),
        ({"cpu_ram_efficient_loading": True, "sync_module_states": False}, "needs sync_module_states=True"),
        ({"activation_checkpointing": True}, "no layers are wrapped"),
        ({"backward_prefetch": "sideways"}, "backward_prefetch='sideways'"),
        ({"sharding_strategy": 9}, "sharding_strategy=9"),
        ({"state_dict_type": "HALF"}, "state_dict_type='HALF'"),
    ]
    for config, message in cases:
        with pytest.raises(ValueError, match=message):
            fsdp_settings(_args(tmp_path, fsdp="full_shard", fsdp_config=config), warn=False)
    with pytest.raises(ValueError, match="both recompute activations"):
        fsdp_settings(_args(tmp_path, fsdp="full_shard", gradient_checkpointing=True, fsdp_config={
            "activation_checkpointing": True, "transformer_layer_cls_to_wrap": "Linear"}), warn=False)


def test_the_trainer_checks_layer_classes_and_deepspeed_on_the_driver(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"has no module of class \['BertLayer'\]"):
        Trainer(model=RegressionModel(), args=_args(tmp_path, fsdp="full_shard",
                                                    fsdp_config={"transformer_layer_cls_to_wrap": "BertLayer"}),
                train_dataset=RegressionDataset(8))
    with pytest.raises(ValueError, match="names no _no_split_modules"):
        Trainer(model=RegressionModel(), args=_args(tmp_path, fsdp="full_shard auto_wrap"),
                train_dataset=RegressionDataset(8))
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else real(name, *a))
    with pytest.raises(ImportError, match=r"pip install 'raytrainer\[deepspeed\]'"):
        Trainer(model=RegressionModel(), args=_args(tmp_path, deepspeed={"zero_optimization": {"stage": 2}}),
                train_dataset=RegressionDataset(8))


class WithConfig(nn.Module):
    class config:
        hidden_size = 16


def test_deepspeed_auto_values_come_from_training_arguments(tmp_path):
    config = {"train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto", "gradient_accumulation_steps": "auto",
              "gradient_clipping": "auto", "bf16": {"enabled": "auto"},
              "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto",
                                                        "weight_decay": "auto"}},
              "scheduler": {"type": "WarmupDecayLR", "params": {"warmup_min_lr": "auto", "warmup_max_lr": "auto",
                                                                "warmup_num_steps": "auto", "total_num_steps": "auto"}},
              "zero_optimization": {"stage": 3, "reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": "auto",
                                    "stage3_param_persistence_threshold": "auto", "offload_optimizer": {"device": "cpu"}}}
    args = _args(tmp_path, deepspeed=config, per_device_train_batch_size=4, gradient_accumulation_steps=3,
                 learning_rate=1e-3, max_grad_norm=0.5, bf16=True, weight_decay=0.1, warmup_steps=5)
    filled = build_config(args, WithConfig(), world_size=2, num_training_steps=100)
    assert (filled["train_micro_batch_size_per_gpu"], filled["gradient_accumulation_steps"],
            filled["train_batch_size"], filled["gradient_clipping"]) == (4, 3, 24, 0.5)
    assert filled["bf16"] == {"enabled": True}
    assert filled["optimizer"]["params"] == {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.1}
    assert filled["scheduler"]["params"] == {"warmup_min_lr": 0, "warmup_max_lr": 1e-3, "warmup_num_steps": 5,
                                             "total_num_steps": 100}
    zero = filled["zero_optimization"]
    assert (zero["reduce_bucket_size"], zero["stage3_prefetch_bucket_size"],
            zero["stage3_param_persistence_threshold"]) == (256, 230, 160)
    assert config["train_batch_size"] == "auto"  # the user's dict is left as it was
    with pytest.raises(ValueError, match=r"train_micro_batch_size_per_gpu=8 but TrainingArguments "
                                         r"per_device_train_batch_size=4.*gradient_clipping=2.0"):
        build_config(_args(tmp_path, deepspeed={"train_micro_batch_size_per_gpu": 8, "gradient_clipping": 2.0},
                           per_device_train_batch_size=4, max_grad_norm=1.0), WithConfig())
    with pytest.raises(ValueError, match="zero_optimization.stage=7"):
        build_config(_args(tmp_path, deepspeed={"zero_optimization": {"stage": 7}}), WithConfig())
