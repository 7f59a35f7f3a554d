"""TrainingArguments / Seq2SeqTrainingArguments: defaults, normalisation, validation, helpers."""

import dataclasses
import json
import logging
import pickle
import re
import warnings

import pytest

from raytrainer.args import Seq2SeqTrainingArguments, TrainingArguments
from raytrainer.enums import (
    DebugOption,
    FSDPOption,
    HubStrategy,
    IntervalStrategy,
    OptimizerNames,
    SaveStrategy,
    SchedulerType,
)


def make(**kwargs) -> TrainingArguments:
    """Build arguments and fail the test if an unexpected 'no effect' warning is raised."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return TrainingArguments(**kwargs)


# --------------------------------------------------------------------------- defaults

SPEC_DEFAULTS = {
    "output_dir": "trainer_output",  # v5
    "overwrite_output_dir": False,
    "do_train": False,
    "do_eval": False,
    "do_predict": False,
    "eval_strategy": "no",
    "prediction_loss_only": False,
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "eval_accumulation_steps": None,
    "eval_delay": 0,
    "learning_rate": 5e-5,
    "weight_decay": 0.0,
    "adam_beta1": 0.9,
    "adam_beta2": 0.999,
    "adam_epsilon": 1e-8,
    "max_grad_norm": 1.0,
    "num_train_epochs": 3.0,
    "max_steps": -1,
    "lr_scheduler_type": "linear",
    "lr_scheduler_kwargs": {},
    "warmup_ratio": 0.0,
    "warmup_steps": 0,
    "log_level": "passive",
    "log_level_replica": "warning",
    "log_on_each_node": True,
    "logging_strategy": "steps",
    "logging_first_step": False,
    "logging_steps": 500,
    "logging_nan_inf_filter": True,
    "save_strategy": "steps",
    "save_steps": 500,
    "save_total_limit": None,
    "save_safetensors": True,
    "save_on_each_node": False,
    "save_only_model": False,
    "use_cpu": False,
    "seed": 42,
    "data_seed": None,
    "bf16": False,
    "fp16": False,
    "fp16_opt_level": "O1",
    "half_precision_backend": "auto",
    "tf32": None,
    "local_rank": -1,
    "ddp_backend": None,
    "dataloader_drop_last": False,
    "eval_steps": None,
    "dataloader_num_workers": 0,
    "past_index": -1,
    "remove_unused_columns": True,
    "label_names": None,
    "load_best_model_at_end": False,
    "metric_for_best_model": None,
    "greater_is_better": None,
    "fsdp": [],
    "fsdp_config": {},
    "deepspeed": None,
    "label_smoothing_factor": 0.0,
    "debug": [],
    "optim": "adamw_torch_fused",  # v5: the fused kernel from torch 2.8 on (the CPU build here is newer)
    "include_num_input_tokens_seen": "no",  # v5: "all" / "non_padding" / "no"
    "optim_args": None,
    "group_by_length": False,
    "length_column_name": "length",
    "report_to": [],  # v5 default "none", normalised to an empty list
    "dataloader_pin_memory": True,
    "dataloader_persistent_workers": False,
    "dataloader_prefetch_factor": None,
    "skip_memory_metrics": True,
    "push_to_hub": False,
    "hub_strategy": "every_save",
    "hub_token": None,
    "hub_private_repo": None,
    "hub_always_push": False,
    "hub_revision": None,
    "gradient_checkpointing": False,
    "include_for_metrics": [],
    "eval_do_concat_batches": True,
    "ray_scope": "last",
    "ddp_timeout": 1800,
    "torch_compile": False,
    "torch_compile_backend": None,
    "neftune_noise_alpha": None,
    "batch_eval_metrics": False,
    "eval_on_start": False,
    "use_liger_kernel": False,
    "average_tokens_across_devices": True,
}


@pytest.mark.parametrize("name, expected", sorted(SPEC_DEFAULTS.items()))
def test_default_matches_spec(name, expected):
    value = getattr(make(), name)
    assert value == expected
    assert type(value) is type(expected) or isinstance(expected, str) or expected is None


def test_every_documented_field_exists():
    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    # 119 documented fields, 14 that transformers v5 added, 13 v4 spellings (raytrainer.compat)
    assert len(names) == 119 + 14 + 13
    assert {"hub_revision", "average_tokens_across_devices", "torch_empty_cache_steps"} <= names


def test_derived_defaults_follow_output_dir():
    args = make(output_dir="~/runs/exp1")
    assert not args.output_dir.startswith("~")
    assert args.run_name == args.output_dir
    pattern = re.escape(args.output_dir) + r"/runs/[A-Z][a-z]{2}\d{2}_\d{2}-\d{2}-\d{2}_.+"
    assert re.fullmatch(pattern, args.logging_dir)
    assert make(output_dir=None).output_dir == "trainer_output"
    assert make(run_name="mine").run_name == "mine"


def test_positional_output_dir():
    assert make().output_dir == "trainer_output"
    assert TrainingArguments("working_dir").output_dir == "working_dir"


def test_disable_tqdm_follows_raytrainer_log_level():
    logger = logging.getLogger("raytrainer")
    old = logger.level
    try:
        logger.setLevel(logging.ERROR)
        assert make().disable_tqdm is True
        logger.setLevel(logging.INFO)
        assert make().disable_tqdm is False
    finally:
        logger.setLevel(old)
    assert make(disable_tqdm=True).disable_tqdm is True


# --------------------------------------------------------------------------- enums


def test_strings_become_enums():
    args = make(
        eval_strategy="epoch", save_strategy="best", logging_strategy="no",
        lr_scheduler_type="cosine", optim="sgd",
    )
    assert args.eval_strategy is IntervalStrategy.EPOCH
    assert args.save_strategy is SaveStrategy.BEST
    assert args.logging_strategy is IntervalStrategy.NO
    assert args.hub_strategy is HubStrategy.EVERY_SAVE
    assert args.lr_scheduler_type is SchedulerType.COSINE
    assert args.optim is OptimizerNames.SGD


@pytest.mark.parametrize(
    "field", ["eval_strategy", "logging_strategy", "save_strategy", "lr_scheduler_type", "optim"]
)
def test_bad_enum_value_names_field(field):
    with pytest.raises(ValueError, match=rf"{field}='bogus' is not a valid .*choose one of"):
        make(**{field: "bogus"})


def test_eval_strategy_best_is_rejected():
    with pytest.raises(ValueError, match="eval_strategy='best'"):
        make(eval_strategy="best")


def test_do_eval_forced_by_eval_strategy():
    assert make(eval_strategy="epoch").do_eval is True
    assert make(eval_strategy="no").do_eval is False
    assert make(do_eval=True).do_eval is True


# --------------------------------------------------------------------------- step intervals


def test_eval_steps_defaults_to_logging_steps():
    assert make(eval_strategy="steps").eval_steps == 500
    assert make(eval_strategy="steps", logging_steps=25).eval_steps == 25
    assert make(eval_strategy="steps", eval_steps=7).eval_steps == 7
    assert make(eval_strategy="epoch").eval_steps is None


def test_eval_steps_zero_is_an_error():
    with pytest.raises(ValueError, match=r"eval_steps=0 is invalid with eval_strategy='steps'"):
        make(eval_strategy="steps", eval_steps=0)


def test_eval_steps_cannot_default_to_unusable_logging_steps():
    with pytest.raises(ValueError, match=r"eval_strategy='steps' needs a positive eval_steps"):
        make(eval_strategy="steps", logging_strategy="no", logging_steps=0)


@pytest.mark.parametrize("name", ["logging_steps", "save_steps"])
def test_ratio_steps_are_kept_and_whole_floats_become_ints(name):
    assert getattr(make(**{name: 0.25}), name) == 0.25
    whole = getattr(make(**{name: 200.0}), name)
    assert whole == 200 and type(whole) is int
    assert type(getattr(make(**{name: 1.0}), name)) is int


@pytest.mark.parametrize("name", ["logging_steps", "save_steps"])
@pytest.mark.parametrize("value, message", [
    (1.5, r"values of 1 or more count steps and must be whole"),
    (0, r"is invalid with .*='steps'"),
    (-3, r"is invalid with .*='steps'"),
    ("10", r"is invalid with .*='steps'"),
])
def test_bad_steps_name_the_field(name, value, message):
    with pytest.raises(ValueError, match=rf"{name}=.*{message}"):
        make(**{name: value})


def test_steps_are_not_checked_when_their_strategy_is_not_steps():
    assert make(save_strategy="no", save_steps=0).save_steps == 0
    assert make(logging_strategy="epoch", logging_steps=2.0).logging_steps == 2


def test_eval_steps_ratio_and_fraction_error():
    assert make(eval_strategy="steps", eval_steps=0.1).eval_steps == 0.1
    with pytest.raises(ValueError, match=r"eval_steps=2.5: values of 1 or more"):
        make(eval_strategy="steps", eval_steps=2.5)


# --------------------------------------------------------------------------- best model


def test_load_best_model_requires_matching_strategies():
    with pytest.raises(
        ValueError,
        match=r"save_strategy to match eval_strategy, got save_strategy='steps' and "
        r"eval_strategy='epoch'",
    ):
        make(load_best_model_at_end=True, eval_strategy="epoch")


def test_load_best_model_requires_evaluation():
    with pytest.raises(ValueError, match=r"load_best_model_at_end=True needs evaluations"):
        make(load_best_model_at_end=True, save_strategy="no")


def test_load_best_model_requires_round_multiple():
    with pytest.raises(
        ValueError,
        match=r"round multiple of eval_steps, got save_steps=500 and eval_steps=300; "
        r"use e.g. save_steps=600",
    ):
        make(load_best_model_at_end=True, eval_strategy="steps", eval_steps=300)
    with pytest.raises(ValueError, match=r"save_steps=100 and eval_steps=200"):
        make(load_best_model_at_end=True, eval_strategy="steps", eval_steps=200, save_steps=100)


def test_load_best_model_rejects_mixed_ratio_and_count():
    with pytest.raises(ValueError, match=r"both ratios .*got save_steps=500 and eval_steps=0.1"):
        make(load_best_model_at_end=True, eval_strategy="steps", eval_steps=0.1)


def test_load_best_model_accepted_combinations():
    args = make(load_best_model_at_end=True, eval_strategy="steps", eval_steps=250)
    assert (args.save_steps, args.eval_steps) == (500, 250)
    ratios = make(load_best_model_at_end=True, eval_strategy="steps", eval_steps=0.1, save_steps=0.3)
    assert ratios.save_steps == 0.3
    best = make(load_best_model_at_end=True, eval_strategy="epoch", save_strategy="best")
    assert best.save_strategy is SaveStrategy.BEST


def test_save_strategy_best_needs_evaluation():
    with pytest.raises(ValueError, match=r"save_strategy='best' .*set eval_strategy"):
        make(save_strategy="best")


def test_metric_and_greater_is_better_defaults():
    args = make(load_best_model_at_end=True, eval_strategy="epoch", save_strategy="epoch")
    assert (args.metric_for_best_model, args.greater_is_better) == ("loss", False)
    best = make(eval_strategy="epoch", save_strategy="best")
    assert (best.metric_for_best_model, best.greater_is_better) == ("loss", False)
    plateau = make(eval_strategy="epoch", lr_scheduler_type="reduce_lr_on_plateau")
    assert plateau.metric_for_best_model == "loss"
    assert make(metric_for_best_model="accuracy").greater_is_better is True
    assert make(metric_for_best_model="eval_loss").greater_is_better is False
    assert make(metric_for_best_model="loss", greater_is_better=True).greater_is_better is True
    assert make().metric_for_best_model is None and make().greater_is_better is None


def test_reduce_on_plateau_needs_evaluation():
    with pytest.raises(ValueError, match=r"lr_scheduler_type='reduce_lr_on_plateau'"):
        make(lr_scheduler_type="reduce_lr_on_plateau")


# --------------------------------------------------------------------------- field checks

BAD_VALUES = [
    ({"per_device_train_batch_size": 0}, r"per_device_train_batch_size must be an integer >= 1, got 0"),
    ({"per_device_eval_batch_size": True}, r"per_device_eval_batch_size must be an integer >= 1"),
    ({"gradient_accumulation_steps": 0}, r"gradient_accumulation_steps must be an integer >= 1"),
    ({"eval_accumulation_steps": 0}, r"eval_accumulation_steps must be an integer >= 1 or None"),
    ({"num_train_epochs": -1}, r"num_train_epochs must be a number >= 0, got -1"),
    ({"max_steps": 0}, r"max_steps must be -1 .* or a positive integer, got 0"),
    ({"max_steps": 2.5}, r"max_steps must be -1"),
    ({"learning_rate": -1e-3}, r"learning_rate must be a number >= 0"),
    ({"learning_rate": "3e-5"}, r"learning_rate must be a number"),
    ({"max_grad_norm": -1.0}, r"max_grad_norm must be a number >= 0"),
    ({"weight_decay": -0.1}, r"weight_decay must be a number >= 0"),
    ({"label_smoothing_factor": 1.0}, r"label_smoothing_factor must be a number in \[0, 1\)"),
    ({"warmup_ratio": 1.5}, r"warmup_ratio must be a number in \[0, 1\]"),
    ({"warmup_steps": -1}, r"warmup_steps must be a step count >= 0"),
    ({"warmup_steps": 2.5}, r"warmup_steps=2.5: values of 1 or more count steps"),
    ({"neftune_noise_alpha": 0}, r"neftune_noise_alpha must be None \(off\) or a positive number"),
    ({"eval_delay": -1}, r"eval_delay must be a number >= 0"),
    ({"seed": 1.5}, r"seed must be an integer, got 1.5"),
    ({"data_seed": "x"}, r"data_seed must be an integer or None"),
    ({"dataloader_num_workers": -1}, r"dataloader_num_workers must be an integer >= 0"),
    ({"dataloader_prefetch_factor": 2}, r"dataloader_prefetch_factor=2 only applies .*dataloader_num_workers > 0"),
    ({"dataloader_persistent_workers": True}, r"dataloader_persistent_workers=True .*dataloader_num_workers > 0"),
    ({"fp16": True, "bf16": True}, r"fp16=True and bf16=True cannot both be set"),
    ({"fp16_full_eval": True, "bf16_full_eval": True}, r"fp16_full_eval=True and bf16_full_eval=True"),
    ({"past_index": 1.0}, r"past_index must be an integer >= -1"),
    ({"include_for_metrics": ["labels"]}, r"include_for_metrics must be a list drawn from \['inputs', 'loss'\]"),
    ({"log_level": "verbose"}, r"log_level='verbose' is not supported; choose one of: 'debug'"),
    ({"log_level_replica": "loud"}, r"log_level_replica='loud' is not supported"),
    ({"ray_scope": "best"}, r"ray_scope='best' is not supported; choose one of: 'last', 'all'"),
    ({"half_precision_backend": "amp"}, r"half_precision_backend='amp' is not supported"),
    ({"ddp_backend": "mpi"}, r"ddp_backend='mpi' is not supported: Ray Train .*'gloo' or 'nccl'"),
    ({"label_names": "labels"}, r"label_names must be None or a list of str such as \['labels'\]"),
    ({"optim_args": "lr0.1"}, r"optim_args='lr0.1' is malformed at 'lr0.1'; write it as 'key=value"),
    ({"optim_args": "a=1,=2"}, r"optim_args='a=1,=2' is malformed at '=2'"),
    ({"report_to": "wandbb"}, r"report_to has unknown integration\(s\) \['wandbb'\]"),
    ({"fsdp": "full_shard shard_grad_op"}, r"'full_shard' and 'shard_grad_op' exclude each other"),
    ({"fsdp": "offload"}, r"fsdp: 'offload' needs a sharding mode"),
    ({"fsdp": "zero3"}, r"fsdp='zero3' is not a valid FSDPOption"),
    ({"debug": "verbose"}, r"debug='verbose' is not a valid DebugOption"),
    ({"fsdp": "full_shard", "deepspeed": {"zero_optimization": {}}}, r"fsdp and deepspeed cannot be used together"),
    ({"lr_scheduler_kwargs": "{not json"}, r"lr_scheduler_kwargs='\{not json' is not valid JSON"),
    ({"lr_scheduler_kwargs": "[1, 2]"}, r"lr_scheduler_kwargs must hold a JSON object"),
    ({"deepspeed": "missing_ds.json"}, r"deepspeed='missing_ds.json' is not a path to an existing JSON file"),
    ({"torch_empty_cache_steps": 0}, r"torch_empty_cache_steps must be an integer >= 1 or None"),
    ({"save_total_limit": -1}, r"save_total_limit must be an integer >= 0 or None"),
    ({"ddp_timeout": 0}, r"ddp_timeout must be an integer >= 1"),
    ({"adam_beta1": 1.0}, r"adam_beta1 must be a number in \[0, 1\)"),
    ({"greater_is_better": "yes"}, r"greater_is_better must be True, False or None"),
]


@pytest.mark.parametrize("kwargs, message", BAD_VALUES)
def test_bad_value_raises_naming_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(**kwargs)


def test_prefetch_factor_with_workers_is_fine():
    args = make(dataloader_num_workers=2, dataloader_prefetch_factor=4, dataloader_persistent_workers=True)
    assert (args.dataloader_prefetch_factor, args.dataloader_persistent_workers) == (4, True)


# --------------------------------------------------------------------------- list / dict fields


def test_json_string_and_dict_configs(tmp_path):
    with pytest.warns(UserWarning, match="accelerator_config: accelerate's data dispatch is not used"):
        args = TrainingArguments(
            lr_scheduler_kwargs='{"num_cycles": 2}',
            gradient_checkpointing_kwargs={"use_reentrant": False},
            accelerator_config='{"even_batches": false}',
        )
    assert args.lr_scheduler_kwargs == {"num_cycles": 2}
    assert args.gradient_checkpointing_kwargs == {"use_reentrant": False}
    assert args.accelerator_config == {"even_batches": False}
    path = tmp_path / "fsdp.json"
    path.write_text(json.dumps({"fsdp_min_num_params": 1000, "xla": False}))
    fsdp = make(fsdp="full_shard auto_wrap", fsdp_config=str(path))
    assert fsdp.fsdp == [FSDPOption.FULL_SHARD, FSDPOption.AUTO_WRAP]
    assert fsdp.fsdp_config == {"min_num_params": 1000, "xla": False}
    ds_path = tmp_path / "ds.json"
    ds_path.write_text('{"train_micro_batch_size_per_gpu": "auto"}')
    assert make(deepspeed=str(ds_path)).deepspeed == {"train_micro_batch_size_per_gpu": "auto"}


def test_caller_dicts_are_copied():
    kwargs = {"num_cycles": 2}
    args = make(lr_scheduler_kwargs=kwargs)
    args.lr_scheduler_kwargs["num_cycles"] = 5
    assert kwargs == {"num_cycles": 2}


def test_fsdp_and_debug_spellings():
    assert make(fsdp=True).fsdp == [FSDPOption.FULL_SHARD]
    assert make(fsdp=["shard_grad_op offload"]).fsdp == [FSDPOption.SHARD_GRAD_OP, FSDPOption.OFFLOAD]
    assert make(fsdp=False).fsdp == []
    with pytest.warns(UserWarning, match="underflow/overflow detector is not implemented"):
        assert TrainingArguments(debug="underflow_overflow").debug == [DebugOption.UNDERFLOW_OVERFLOW]


def test_fsdp_wrapping_policies_exclude_each_other():
    config = {"min_num_params": 10, "transformer_layer_cls_to_wrap": ["Block"]}
    with pytest.raises(ValueError, match=r"'min_num_params' and 'transformer_layer_cls_to_wrap'"):
        make(fsdp="full_shard auto_wrap", fsdp_config=config)


def test_report_to_normalisation():
    from raytrainer.integrations import installed_integrations

    assert make(report_to="none").report_to == []
    assert make(report_to="all").report_to == installed_integrations()  # what is installed, as in HF
    assert make(report_to=None).report_to == []
    assert make(report_to=["none"]).report_to == []
    assert make(report_to=["wandb", "tensorboard", "wandb"]).report_to == ["wandb", "tensorboard"]
    assert make(report_to="mlflow").ignored_settings() == []  # shipped integrations are not "ignored"
    with pytest.warns(UserWarning, match="report_to='comet_ml'"):
        assert TrainingArguments(report_to="comet_ml").report_to == ["comet_ml"]


def test_include_for_metrics_and_deprecated_flag():
    assert make(include_for_metrics=["loss"]).include_for_metrics == ["loss"]
    both = make(include_for_metrics=["loss"], include_inputs_for_metrics=True)
    assert both.include_for_metrics == ["loss", "inputs"]
    assert make(include_inputs_for_metrics=True).include_for_metrics == ["inputs"]


def test_label_names_and_target_modules():
    assert make(label_names=("start_positions", "end_positions")).label_names == [
        "start_positions", "end_positions",
    ]
    with pytest.warns(UserWarning, match="optim_target_modules: only GaLore/APOLLO"):
        assert TrainingArguments(optim_target_modules="attn").optim_target_modules == "attn"
    with pytest.warns(UserWarning, match="optim_target_modules"):
        assert TrainingArguments(optim_target_modules=["attn", "mlp"]).optim_target_modules == ["attn", "mlp"]


def test_compile_flags():
    assert make(torch_compile_backend="aot_eager").torch_compile is True
    mode = make(torch_compile_mode="reduce-overhead")
    assert (mode.torch_compile, mode.torch_compile_backend) == (True, "inductor")
    assert make(torch_compile=True).torch_compile_backend == "inductor"
    assert make().torch_compile_backend is None


# --------------------------------------------------------------------------- warmup


@pytest.mark.parametrize("kwargs, total, expected", [
    ({}, 1000, 0),
    ({"warmup_steps": 30}, 1000, 30),
    ({"warmup_steps": 30.0}, 1000, 30),
    ({"warmup_steps": 1}, 1000, 1),
    ({"warmup_steps": 0.05}, 1000, 50),
    ({"warmup_steps": 0.3}, 10, 3),
    ({"warmup_steps": 0.05}, 30, 2),
    ({"warmup_ratio": 0.1}, 95, 10),
    ({"warmup_ratio": 0.1, "warmup_steps": 7}, 95, 7),
    ({"warmup_ratio": 1.0}, 40, 40),
    ({"warmup_ratio": 0.5}, 0, 0),
])
def test_get_warmup_steps(kwargs, total, expected):
    result = make(**kwargs).get_warmup_steps(total)
    assert result == expected and type(result) is int


def test_get_warmup_steps_rejects_bad_totals():
    with pytest.raises(ValueError, match=r"num_training_steps must be >= 0, got -1"):
        make().get_warmup_steps(-1)
    with pytest.raises(ValueError, match=r"num_training_steps must be an int, got 10.0"):
        make().get_warmup_steps(10.0)


# --------------------------------------------------------------------------- serialisation


def test_secrets_are_masked_everywhere():
    args = make(hub_token="hf_SECRET123")  # used by push_to_hub(): not an ignored setting
    assert args.hub_token == "hf_SECRET123"
    assert args.to_dict()["hub_token"] == "<HUB_TOKEN>"
    assert json.loads(args.to_json_string())["hub_token"] == "<HUB_TOKEN>"
    for text in (repr(args), str(args), args.to_json_string(), str(args.to_sanitized_dict())):
        assert "hf_SECRET123" not in text
    assert "hub_token='<HUB_TOKEN>'" in repr(args)
    assert make().to_dict()["hub_token"] == "<HUB_TOKEN>"


def test_to_dict_uses_plain_values():
    args = make(eval_strategy="epoch", fsdp="full_shard", optim="adafactor")
    data = args.to_dict()
    assert data["eval_strategy"] == "epoch" and type(data["eval_strategy"]) is str
    assert data["fsdp"] == ["full_shard"] and type(data["fsdp"][0]) is str
    assert type(data["optim"]) is str
    assert len(data) == 119 + 14  # the v4 spellings are not written (their values moved)
    assert json.loads(args.to_json_string())["learning_rate"] == 5e-5


def test_to_sanitized_dict():
    data = make(per_device_train_batch_size=4, lr_scheduler_kwargs={"a": 1}).to_sanitized_dict()
    assert data["train_batch_size"] == 4 and data["eval_batch_size"] == 8
    assert data["lr_scheduler_kwargs"] == "{'a': 1}"
    assert data["report_to"] == "[]"
    assert data["label_names"] == "None"
    assert data["learning_rate"] == 5e-5 and data["fp16"] is False
    assert all(type(v) in (bool, int, float, str) for v in data.values())


def test_repr_lists_fields_sorted():
    text = repr(make(learning_rate=0.25))
    assert text.startswith("TrainingArguments(\n")
    assert "learning_rate=0.25,\n" in text
    assert text.index("adam_beta1=") < text.index("weight_decay=")


def test_pickle_round_trip_and_replace():
    args = make(eval_strategy="steps", eval_steps=50, fsdp="full_shard", lr_scheduler_kwargs={"a": 1})
    clone = pickle.loads(pickle.dumps(args))
    assert clone == args
    assert clone.eval_strategy is IntervalStrategy.STEPS and clone.fsdp == [FSDPOption.FULL_SHARD]
    changed = dataclasses.replace(args, learning_rate=1e-3)
    assert changed.learning_rate == 1e-3 and args.learning_rate == 5e-5
    assert changed.eval_steps == 50
    with pytest.raises(ValueError, match="per_device_train_batch_size"):
        dataclasses.replace(args, per_device_train_batch_size=0)


# --------------------------------------------------------------------------- ignored settings


def test_defaults_warn_about_nothing():
    assert make().ignored_settings() == []


def test_ignored_settings_warning_lists_each_field_once():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        args = TrainingArguments(
            tpu_num_cores=8, use_ipex=True, jit_mode_eval=True, half_precision_backend="apex",
            fp16_opt_level="O2", use_mps_device=True, torchdynamo="inductor", push_to_hub=True,
            hub_model_id="me/model", report_to=["wandb", "neptune"], use_liger_kernel=True, local_rank=3,
            debug="tpu_metrics_debug",
        )
    assert len(caught) == 1
    warning = caught[0]
    assert warning.category is UserWarning
    assert warning.filename == __file__  # points at the caller's line
    text = str(warning.message)
    assert text.startswith("TrainingArguments: these settings have no effect in raytrainer:\n")
    notes = args.ignored_settings()
    assert [line[4:] for line in text.splitlines()[1:]] == notes
    fields = [note.split(":")[0] for note in notes]
    assert fields == [
        "tpu_num_cores", "tpu_metrics_debug / debug='tpu_metrics_debug'", "use_ipex",
        "jit_mode_eval", "half_precision_backend='apex'", "fp16_opt_level", "use_mps_device",
        "torchdynamo", "use_liger_kernel", "local_rank", "report_to='neptune'",
    ]
    assert "use torch_compile_backend instead" in notes[fields.index("torchdynamo")]
    assert "Ray Train assigns ranks" in notes[fields.index("local_rank")]


def test_fp16_backend_apex_is_mapped_and_reported():
    with pytest.warns(UserWarning, match=r"fp16_backend='apex': Apex is not used"):
        args = TrainingArguments(fp16_backend="apex")
    assert args.half_precision_backend == "apex"
    assert make(fp16_backend="cpu_amp").half_precision_backend == "cpu_amp"


def test_fsdp_config_without_fsdp_is_reported():
    with pytest.warns(UserWarning, match=r"fsdp_config: has no effect while fsdp is empty"):
        TrainingArguments(fsdp_config={"min_num_params": 5})


# --------------------------------------------------------------------------- processes


def test_ranks_from_environment(monkeypatch):
    args = make()
    assert (args.world_size, args.process_index, args.local_process_index) == (1, 0, 0)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert (args.world_size, args.process_index, args.local_process_index) == (4, 3, 1)
    assert args.should_log is False and args.should_save is False
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert args.should_log is True  # log_on_each_node defaults to True
    assert args.should_save is False
    assert make(save_on_each_node=True).should_save is True
    assert make(log_on_each_node=False).should_log is False
    monkeypatch.setenv("RANK", "zero")
    with pytest.raises(ValueError, match=r"environment variable RANK='zero' must be an integer"):
        args.process_index


def test_device_and_batch_sizes():
    args = make(use_cpu=True, per_device_train_batch_size=3, per_device_eval_batch_size=5)
    assert str(args.device) == "cpu" and args.n_gpu == 0
    assert (args.train_batch_size, args.eval_batch_size) == (3, 5)
    assert args.place_model_on_device is True
    assert args.ddp_timeout_delta.total_seconds() == 1800


def test_get_process_log_level(monkeypatch):
    assert make(log_level="info").get_process_log_level() == logging.INFO
    logger = logging.getLogger("raytrainer")
    old = logger.level
    try:
        logger.setLevel(logging.ERROR)
        assert make().get_process_log_level() == logging.ERROR  # passive keeps the level
    finally:
        logger.setLevel(old)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("RANK", "1")
    replica = make(log_level="debug", log_level_replica="error")
    assert replica.get_process_log_level() == logging.ERROR


def test_main_process_first_without_process_group_just_runs():
    ran = []
    with make().main_process_first(local=False, desc="tokenise"):
        ran.append(1)
    assert ran == [1]


# --------------------------------------------------------------------------- set_* helpers


def test_set_training():
    args = make()
    assert args.set_training(learning_rate=1e-4, batch_size=32, num_epochs=2, seed=7) is args
    assert (args.do_train, args.learning_rate, args.per_device_train_batch_size) == (True, 1e-4, 32)
    assert (args.num_train_epochs, args.seed, args.max_steps) == (2, 7, -1)


def test_set_evaluate_and_testing():
    args = make().set_evaluate(strategy="steps", steps=100, batch_size=4, delay=2)
    assert (args.eval_strategy, args.eval_steps, args.do_eval) == (IntervalStrategy.STEPS, 100, True)
    assert (args.per_device_eval_batch_size, args.eval_delay) == (4, 2)
    args.set_testing(batch_size=32, loss_only=True)
    assert (args.do_predict, args.per_device_eval_batch_size, args.prediction_loss_only) == (True, 32, True)


def test_set_save_logging_optimizer_scheduler_dataloader():
    args = make()
    assert args.set_save(strategy="epoch", total_limit=2).save_strategy is SaveStrategy.EPOCH
    assert args.save_total_limit == 2
    args.set_logging(strategy="steps", steps=100, level="info", replica_level="error")
    assert (args.logging_steps, args.log_level, args.log_level_replica) == (100, "info", "error")
    assert args.log_on_each_node is True and args.logging_nan_inf_filter is True
    args.set_optimizer(name="adafactor", beta1=0.8, args="scale_parameter=False")
    assert (args.optim, args.adam_beta1, args.optim_args) == ("adafactor", 0.8, "scale_parameter=False")
    args.set_lr_scheduler(name="cosine", warmup_steps=0.05, max_steps=100)
    assert (args.lr_scheduler_type, args.warmup_steps, args.max_steps) == ("cosine", 0.05, 100)
    args.set_dataloader(train_batch_size=16, eval_batch_size=64, num_workers=2, sampler_seed=3)
    assert (args.per_device_train_batch_size, args.per_device_eval_batch_size) == (16, 64)
    assert (args.dataloader_num_workers, args.data_seed) == (2, 3)


def test_set_push_to_hub_records_the_settings():
    args = make()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the Hub settings take effect now: nothing to warn about
        args.set_push_to_hub("me/awesome-model", strategy="checkpoint", token="hf_abc", private_repo=True)
    assert (args.push_to_hub, args.hub_model_id, args.hub_strategy) == (True, "me/awesome-model", "checkpoint")
    assert args.hub_private_repo is True
    assert "hf_abc" not in repr(args)


def test_rejected_setter_leaves_arguments_untouched():
    args = make()
    with pytest.raises(ValueError, match=r"eval_steps=0 is invalid"):
        args.set_evaluate(strategy="steps", steps=0)
    assert args.eval_strategy is IntervalStrategy.NO and args.eval_steps is None
    with pytest.raises(ValueError, match=r"strategy='sometimes' is not a valid"):
        args.set_evaluate(strategy="sometimes")


# --------------------------------------------------------------------------- Seq2Seq


class _FakeGenerationConfig:
    def to_dict(self):
        return {"max_new_tokens": 16}


def test_seq2seq_defaults_and_serialisation(tmp_path):
    args = Seq2SeqTrainingArguments()
    assert (args.sortish_sampler, args.predict_with_generate) == (False, False)
    assert (args.generation_max_length, args.generation_num_beams, args.generation_config) == (
        None, None, None,
    )
    gen = Seq2SeqTrainingArguments(generation_config=_FakeGenerationConfig(), generation_num_beams=4)
    assert gen.to_dict()["generation_config"] == {"max_new_tokens": 16}
    assert json.loads(gen.to_json_string())["generation_num_beams"] == 4
    assert Seq2SeqTrainingArguments(generation_config=tmp_path).generation_config == str(tmp_path)
    assert repr(gen).startswith("Seq2SeqTrainingArguments(\n")
    assert pickle.loads(pickle.dumps(args)) == args


@pytest.mark.parametrize("kwargs, message", [
    ({"generation_max_length": 0}, r"generation_max_length must be an integer >= 1 or None, got 0"),
    ({"generation_num_beams": 1.5}, r"generation_num_beams must be an integer >= 1 or None, got 1.5"),
    ({"predict_with_generate": "yes"}, r"predict_with_generate must be True or False"),
    ({"generation_config": 3}, r"generation_config must be None, a path or name, a dict"),
    ({"learning_rate": -1}, r"learning_rate must be a number >= 0"),
])
def test_seq2seq_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Seq2SeqTrainingArguments(**kwargs)
