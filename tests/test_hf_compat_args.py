"""Scripts written for transformers v4 and v5 keep working: every field name, the v4 spellings
(with a FutureWarning naming the v5 one), the v5 fields and defaults, ``training_args.bin``."""

import dataclasses
import json
import os
import re
import warnings

import pytest
import torch
from conftest import RegressionDataset, RegressionModel

from raytrainer import HfArgumentParser, Seq2SeqTrainingArguments, Trainer, TrainingArguments
from raytrainer.compat.v4_names import DEPRECATED_FIELDS

SPEC_DIR = "/work/shared/spec"
# The TrainingArguments parameters the English page documents (its "Parameters:" list) and the
# ones in the v4.37 signature of the Chinese page; test_spec_lists_are_current re-reads them.
SPEC_EN_FIELDS = set("""
accelerator_config adam_beta1 adam_beta2 adam_epsilon auto_find_batch_size batch_eval_metrics bf16
bf16_full_eval data_seed dataloader_drop_last dataloader_num_workers dataloader_persistent_workers
dataloader_pin_memory dataloader_prefetch_factor ddp_backend ddp_broadcast_buffers ddp_bucket_cap_mb
ddp_find_unused_parameters ddp_timeout debug deepspeed disable_tqdm do_eval do_predict do_train
eval_accumulation_steps eval_delay eval_do_concat_batches eval_on_start eval_steps eval_strategy
eval_use_gather_object fp16 fp16_backend fp16_full_eval fp16_opt_level fsdp fsdp_config full_determinism
gradient_accumulation_steps gradient_checkpointing gradient_checkpointing_kwargs greater_is_better
group_by_length half_precision_backend hub_always_push hub_model_id hub_private_repo hub_strategy hub_token
ignore_data_skip include_for_metrics include_inputs_for_metrics include_num_input_tokens_seen
include_tokens_per_second jit_mode_eval label_names label_smoothing_factor learning_rate length_column_name
load_best_model_at_end local_rank log_level log_level_replica log_on_each_node logging_dir logging_first_step
logging_nan_inf_filter logging_steps logging_strategy lr_scheduler_kwargs lr_scheduler_type max_grad_norm
max_steps metric_for_best_model neftune_noise_alpha optim optim_args optim_target_modules output_dir
overwrite_output_dir past_index per_device_eval_batch_size per_device_train_batch_size prediction_loss_only
push_to_hub ray_scope remove_unused_columns report_to restore_callback_states_from_checkpoint
resume_from_checkpoint run_name save_on_each_node save_only_model save_safetensors save_steps save_strategy
save_total_limit seed skip_memory_metrics split_batches tf32 torch_compile torch_compile_backend
torch_compile_mode torch_empty_cache_steps torchdynamo tpu_num_cores use_cpu use_ipex use_liger_kernel
use_mps_device warmup_ratio warmup_steps weight_decay
""".split())
SPEC_V4_SIGNATURE = set("""
adafactor adam_beta1 adam_beta2 adam_epsilon auto_find_batch_size bf16 bf16_full_eval data_seed
dataloader_drop_last dataloader_num_workers dataloader_persistent_workers dataloader_pin_memory ddp_backend
ddp_broadcast_buffers ddp_bucket_cap_mb ddp_find_unused_parameters ddp_timeout debug deepspeed disable_tqdm
dispatch_batches do_eval do_predict do_train eval_accumulation_steps eval_delay eval_steps evaluation_strategy
fp16 fp16_backend fp16_full_eval fp16_opt_level fsdp fsdp_config fsdp_min_num_params
fsdp_transformer_layer_cls_to_wrap full_determinism gradient_accumulation_steps gradient_checkpointing
gradient_checkpointing_kwargs greater_is_better group_by_length half_precision_backend hub_always_push
hub_model_id hub_private_repo hub_strategy hub_token ignore_data_skip include_inputs_for_metrics
include_num_input_tokens_seen include_tokens_per_second jit_mode_eval label_names label_smoothing_factor
learning_rate length_column_name load_best_model_at_end local_rank log_level log_level_replica log_on_each_node
logging_dir logging_first_step logging_nan_inf_filter logging_steps logging_strategy lr_scheduler_kwargs
lr_scheduler_type max_grad_norm max_steps metric_for_best_model mp_parameters neftune_noise_alpha no_cuda
num_train_epochs optim optim_args output_dir overwrite_output_dir past_index per_device_eval_batch_size
per_device_train_batch_size per_gpu_eval_batch_size per_gpu_train_batch_size prediction_loss_only push_to_hub
push_to_hub_model_id push_to_hub_organization push_to_hub_token ray_scope remove_unused_columns report_to
resume_from_checkpoint run_name save_on_each_node save_only_model save_safetensors save_steps save_strategy
save_total_limit seed skip_memory_metrics split_batches tf32 torch_compile torch_compile_backend
torch_compile_mode torchdynamo tpu_metrics_debug tpu_num_cores use_cpu use_ipex use_legacy_prediction_loop
use_mps_device warmup_ratio warmup_steps weight_decay
""".split())
SEQ2SEQ_FIELDS = {"sortish_sampler", "predict_with_generate", "generation_max_length", "generation_num_beams",
                  "generation_config"}


def _field_names(cls) -> set:
    return {f.name for f in dataclasses.fields(cls) if f.init}


def _quiet(**kwargs) -> TrainingArguments:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TrainingArguments(**kwargs)


# --------------------------------------------------------------------------- every field name

def test_every_field_of_the_installed_transformers_is_accepted():
    transformers = pytest.importorskip("transformers")
    theirs = _field_names(transformers.TrainingArguments)
    assert theirs - _field_names(TrainingArguments) == set()
    assert _field_names(transformers.Seq2SeqTrainingArguments) - _field_names(Seq2SeqTrainingArguments) == set()
    # the fields v5 dropped stay: the spec documents them, and v4 scripts pass them
    assert (_field_names(TrainingArguments) - theirs) <= SPEC_EN_FIELDS | SPEC_V4_SIGNATURE


def test_every_field_the_spec_pages_name_is_accepted():
    ours = _field_names(TrainingArguments)
    assert SPEC_EN_FIELDS - ours == set()
    assert SPEC_V4_SIGNATURE - ours == set()
    assert SEQ2SEQ_FIELDS <= _field_names(Seq2SeqTrainingArguments) - ours
    assert set(DEPRECATED_FIELDS) <= SPEC_V4_SIGNATURE - SPEC_EN_FIELDS  # each v4 spelling the v4 page names


@pytest.mark.skipif(not os.path.isdir(SPEC_DIR), reason="the spec pages are not on this machine")
def test_spec_lists_are_current():
    with open(os.path.join(SPEC_DIR, "trainer_api_en.md"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    section = lines[lines.index("## TrainingArguments"):lines.index("## Seq2SeqTrainingArguments")]
    documented = {m.group(1) for line in section if (m := re.match(r"^        ([a-z_0-9]+) \(", line))}
    assert documented == SPEC_EN_FIELDS
    with open(os.path.join(SPEC_DIR, "trainer_api_v4_zh.md"), encoding="utf-8") as f:
        text = f.read()
    signature = text[text.index("( output_dir: str"):]
    signature = signature[:signature.index(")")]
    assert set(re.findall(r"([a-z_0-9]+):", signature)) == SPEC_V4_SIGNATURE


def test_v5_fields_every_one_builds_and_round_trips():
    args = _quiet(use_cache=True, activation_checkpointing=True, activation_checkpointing_kwargs={"use_reentrant": False},
                  train_sampling_strategy="sequential", ddp_static_graph=True, enable_jit_checkpoint=True,
                  dataloader_in_order=False, project="p", include_num_input_tokens_seen="non_padding")
    again = _quiet(**args.to_dict())
    assert again.to_dict() == args.to_dict()
    assert json.loads(args.to_json_string())["train_sampling_strategy"] == "sequential"


# --------------------------------------------------------------------------- v5 meanings and defaults

def test_default_optimizer_is_the_fused_adamw_like_transformers():
    args = TrainingArguments()
    assert args.optim == "adamw_torch_fused"  # torch >= 2.8 here
    transformers = pytest.importorskip("transformers")
    assert transformers.TrainingArguments().optim.value == args.optim.value


def test_default_optimizer_really_is_fused(make_args):
    trainer = Trainer(model=RegressionModel(), args=make_args(max_steps=1, optim=TrainingArguments().optim),
                      train_dataset=RegressionDataset(8))
    trainer.train()
    assert isinstance(trainer.optimizer, torch.optim.AdamW)
    assert trainer.optimizer.defaults["fused"] is True


@pytest.mark.parametrize("given, expected", [(True, "all"), (False, "no"), ("non_padding", "non_padding"),
                                             ("all", "all"), ("no", "no")])
def test_include_num_input_tokens_seen_true_means_all(given, expected):
    assert _quiet(include_num_input_tokens_seen=given).include_num_input_tokens_seen == expected
    transformers = pytest.importorskip("transformers")
    assert transformers.TrainingArguments(include_num_input_tokens_seen=given).include_num_input_tokens_seen == expected


def test_include_num_input_tokens_seen_rejects_other_values():
    with pytest.raises(ValueError, match=r"include_num_input_tokens_seen='some'.*'all', 'non_padding', 'no'"):
        TrainingArguments(include_num_input_tokens_seen="some")


def _token_rows():
    rows = []
    for length in (2, 4, 3, 1):
        ids = torch.zeros(4, dtype=torch.long)
        ids[:length] = torch.arange(1, length + 1)
        mask = (torch.arange(4) < length).long()
        rows.append({"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([float(length)])})
    return rows


class _TokenRegressor(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(8, 2)
        self.head = torch.nn.Linear(2, 1)

    def forward(self, input_ids, attention_mask=None, labels=None):
        out = self.head(self.embed(input_ids).mean(1))
        return {"loss": torch.nn.functional.mse_loss(out, labels), "logits": out}


@pytest.mark.parametrize("mode, expected", [(True, 4 * 4 * 2), ("non_padding", (2 + 4 + 3 + 1) * 2), (False, None)])
def test_tokens_seen_counts_all_or_only_real_tokens(make_args, mode, expected):
    from _hf_models import ListDataset

    args = make_args(num_train_epochs=2, per_device_train_batch_size=2, include_num_input_tokens_seen=mode)
    trainer = Trainer(model=_TokenRegressor(), args=args, train_dataset=ListDataset(_token_rows()))
    trainer.train()
    logged = [entry.get("num_input_tokens_seen") for entry in trainer.state.log_history]
    if expected is None:
        assert logged == [None] * len(logged)
    else:
        assert trainer.state.num_input_tokens_seen == expected and logged[-1] == expected


def test_use_cpu_turns_off_pin_memory_like_transformers():
    assert _quiet(use_cpu=True).dataloader_pin_memory is False
    assert _quiet().dataloader_pin_memory is True
    transformers = pytest.importorskip("transformers")
    assert transformers.TrainingArguments(use_cpu=True).dataloader_pin_memory is False


def test_to_json_string_writes_dtypes_as_strings():
    args = _quiet(lr_scheduler_kwargs={"dtype": torch.bfloat16}, fsdp_config={"mixed": {"dtype": torch.float16}},
                  gradient_checkpointing_kwargs={"dtype": torch.float32})
    data = json.loads(args.to_json_string())
    assert data["lr_scheduler_kwargs"] == {"dtype": "bfloat16"}
    assert data["fsdp_config"] == {"mixed": {"dtype": "float16"}}
    assert data["gradient_checkpointing_kwargs"] == {"dtype": "float32"}
    assert args.lr_scheduler_kwargs["dtype"] is torch.bfloat16  # the object itself keeps the dtype
    transformers = pytest.importorskip("transformers")
    theirs = transformers.TrainingArguments(lr_scheduler_kwargs={"dtype": torch.bfloat16})
    assert json.loads(theirs.to_json_string())["lr_scheduler_kwargs"] == data["lr_scheduler_kwargs"]


def test_activation_checkpointing_is_gradient_checkpointing():
    args = _quiet(activation_checkpointing=True, activation_checkpointing_kwargs='{"use_reentrant": false}')
    assert args.gradient_checkpointing is True and args.gradient_checkpointing_kwargs == {"use_reentrant": False}
    assert _quiet(gradient_checkpointing=True).gradient_checkpointing is True  # the older name still works
    assert args.set_training(activation_checkpointing=False).gradient_checkpointing is False
    assert args.set_training(gradient_checkpointing=True).gradient_checkpointing is True


def test_activation_checkpointing_reaches_the_model(make_args):
    class Checkpointed(RegressionModel):
        def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None):
            self.enabled_with = gradient_checkpointing_kwargs

    model = Checkpointed()
    args = make_args(max_steps=1, activation_checkpointing=True, activation_checkpointing_kwargs={"every_n_layers": 2})
    Trainer(model=model, args=args, train_dataset=RegressionDataset(8)).train()
    assert model.enabled_with == {"every_n_layers": 2}


def test_train_sampling_strategy_and_group_by_length_agree():
    assert _quiet(group_by_length=True).train_sampling_strategy == "group_by_length"
    assert _quiet(train_sampling_strategy="group_by_length").group_by_length is True
    with pytest.raises(ValueError, match="group_by_length=True and train_sampling_strategy='sequential'"):
        TrainingArguments(group_by_length=True, train_sampling_strategy="sequential")
    with pytest.raises(ValueError, match="train_sampling_strategy='shuffled' is not supported"):
        TrainingArguments(train_sampling_strategy="shuffled")


def test_sequential_sampling_trains_in_dataset_order(make_args):
    class Recorder(RegressionModel):
        seen = []

        def forward(self, x, labels=None):
            self.seen.append(x[:, 0].tolist())
            return super().forward(x, labels)

    dataset = RegressionDataset(12)
    model = Recorder()
    args = make_args(num_train_epochs=2, train_sampling_strategy="sequential")
    Trainer(model=model, args=args, train_dataset=dataset).train()
    in_order = [dataset.x[i:i + 4, 0].tolist() for i in range(0, 12, 4)]
    assert model.seen[-6:] == in_order + in_order  # the constructor's probe ran first


def test_batch_rebalance_falls_back_to_length_grouping_with_a_warning():
    with pytest.warns(UserWarning, match="train_sampling_strategy='batch_rebalance': not implemented; batches are "
                                         r"grouped by length instead \('group_by_length'\)"):
        args = TrainingArguments(train_sampling_strategy="batch_rebalance")
    assert args.group_by_length is True


def test_loader_start_method_and_order_reach_the_dataloader(make_args):
    args = make_args(max_steps=1, dataloader_num_workers=1, dataloader_multiprocessing_context="fork",
                     dataloader_in_order=False)
    trainer = Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(8))
    loader = trainer.get_train_dataloader()
    assert loader.multiprocessing_context.get_start_method() == "fork" and loader.in_order is False
    assert sum(len(batch["x"]) for batch in loader) == 8
    with pytest.raises(ValueError, match="dataloader_multiprocessing_context='spawn' starts loader processes, but "
                                         "dataloader_num_workers=0"):
        TrainingArguments(dataloader_multiprocessing_context="spawn")
    with pytest.raises(ValueError, match="dataloader_multiprocessing_context='threads' is not a start method"):
        TrainingArguments(dataloader_multiprocessing_context="threads", dataloader_num_workers=1)


def test_ddp_static_graph_reaches_distributed_data_parallel(tmp_path):
    import torch.distributed as dist

    from raytrainer.parallel.strategy import _wrap_ddp  # DDP is the default parallel strategy

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model = RegressionModel()
        assert _wrap_ddp(model, model, _quiet(ddp_static_graph=True)).static_graph is True
        assert _wrap_ddp(model, model, _quiet()).static_graph is False
    finally:
        dist.destroy_process_group()


def test_use_cache_is_set_on_the_model_config(make_args):
    class WithConfig(RegressionModel):
        def __init__(self):
            super().__init__()
            self.config = type("Config", (), {"use_cache": True})()

    model = WithConfig()
    Trainer(model=model, args=make_args(), train_dataset=RegressionDataset(8))
    assert model.config.use_cache is False  # v5 default
    Trainer(model=model, args=make_args(use_cache=True), train_dataset=RegressionDataset(8))
    assert model.config.use_cache is True


def test_settings_that_cannot_apply_are_reported_in_the_one_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        TrainingArguments(parallelism_config={"tp_size": 2}, liger_kernel_config={"rope": True},
                          trackio_space_id="me/space", project="demo", use_ipex=True)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1
    assert messages[0].startswith("TrainingArguments: these settings have no effect in raytrainer:")
    for expected in ("parallelism_config: accelerate's tensor/context/sequence parallelism", "liger_kernel_config",
                     "trackio_space_id", "project: only the Trackio integration reads it", "use_ipex"):
        assert expected in messages[0]


def test_accelerate_parallelism_config_is_accepted_and_written_as_data():
    accelerate_config = pytest.importorskip("accelerate.parallelism_config")
    args = _quiet(parallelism_config=accelerate_config.ParallelismConfig())
    written = json.loads(args.to_json_string())["parallelism_config"]
    assert isinstance(written, dict) and written["tp_size"] == 1


# --------------------------------------------------------------------------- v4 spellings

V4_CASES = [
    ("evaluation_strategy", "steps", {"eval_steps": 5}, "eval_strategy", "steps"),
    ("per_gpu_train_batch_size", 3, {}, "per_device_train_batch_size", 3),
    ("per_gpu_eval_batch_size", 5, {}, "per_device_eval_batch_size", 5),
    ("no_cuda", True, {}, "use_cpu", True),
    ("adafactor", True, {}, "optim", "adafactor"),
    ("fsdp_min_num_params", 1000, {}, "fsdp_config", {"min_num_params": 1000}),
    ("fsdp_transformer_layer_cls_to_wrap", "Block", {}, "fsdp_config", {"transformer_layer_cls_to_wrap": ["Block"]}),
    ("dispatch_batches", False, {}, "accelerator_config", {"dispatch_batches": False}),
    ("push_to_hub_model_id", "model", {}, "hub_model_id", "model"),
    ("push_to_hub_token", "secret-token", {}, "hub_token", "secret-token"),
]


@pytest.mark.parametrize("old, value, extra, new, expected", V4_CASES, ids=[case[0] for case in V4_CASES])
def test_v4_spelling_is_moved_with_a_warning_naming_the_new_one(old, value, extra, new, expected):
    with pytest.warns(FutureWarning, match=rf"{old}=.* is the transformers v4 spelling; write {re.escape(new)}"):
        args = TrainingArguments(**{old: value}, **extra)
    current = getattr(args, new)
    assert (current.value if hasattr(current, "value") else current) == expected
    assert getattr(args, old) is None  # moved: a copy does not warn again
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        assert getattr(dataclasses.replace(args, seed=1), new) == getattr(args, new)


def test_v4_token_values_never_appear_in_warnings():
    with pytest.warns(FutureWarning) as caught:
        TrainingArguments(push_to_hub_token="hf_secret")
    assert all("hf_secret" not in str(w.message) for w in caught)
    assert "push_to_hub_token=<hidden>" in str(caught[0].message)


def test_v4_organization_and_model_id_make_one_hub_model_id():
    with pytest.warns(FutureWarning):
        args = TrainingArguments(push_to_hub_model_id="model", push_to_hub_organization="org")
    assert args.hub_model_id == "org/model"


@pytest.mark.parametrize("old, value", [("use_legacy_prediction_loop", True), ("mp_parameters", "--x 1")])
def test_v4_settings_without_successor_warn_that_they_do_nothing(old, value):
    with pytest.warns(FutureWarning, match=rf"{old}=.*write nothing \("):
        TrainingArguments(**{old: value})


def test_v4_defaults_from_an_old_config_dump_are_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        args = TrainingArguments(evaluation_strategy="no", no_cuda=False, adafactor=False, mp_parameters="",
                                 fsdp_min_num_params=0, use_legacy_prediction_loop=False)
    assert args.use_cpu is False and args.eval_strategy == "no"


def test_both_spellings_with_different_values_is_an_error():
    with pytest.raises(ValueError, match="evaluation_strategy .*and eval_strategy='epoch' disagree; keep only "
                                         "eval_strategy"):
        _quiet(evaluation_strategy="steps", eval_strategy="epoch", eval_steps=2)
    assert _quiet(evaluation_strategy="epoch", eval_strategy="epoch").eval_strategy == "epoch"


def test_v4_spellings_from_the_command_line():
    parser = HfArgumentParser(TrainingArguments)
    with pytest.warns(FutureWarning, match="evaluation_strategy"):
        (args,) = parser.parse_args_into_dataclasses(["--output_dir", "o", "--evaluation_strategy", "epoch",
                                                      "--per_gpu_train_batch_size", "2"])
    assert args.eval_strategy == "epoch" and args.per_device_train_batch_size == 2


@pytest.mark.parametrize("argv, name, expected", [
    (["--include_num_input_tokens_seen"], "include_num_input_tokens_seen", "all"),  # the v4 bool flag
    (["--include_num_input_tokens_seen", "True"], "include_num_input_tokens_seen", "all"),
    (["--include_num_input_tokens_seen", "non_padding"], "include_num_input_tokens_seen", "non_padding"),
    (["--activation_checkpointing"], "gradient_checkpointing", True),
    (["--train_sampling_strategy", "sequential"], "train_sampling_strategy", "sequential"),
    (["--ddp_static_graph", "false"], "ddp_static_graph", False),
    (["--parallelism_config", '{"tp_size": 2}'], "parallelism_config", {"tp_size": 2}),
])
def test_v5_fields_from_the_command_line(argv, name, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (args,) = HfArgumentParser(TrainingArguments).parse_args_into_dataclasses(argv)
    assert getattr(args, name) == expected


def test_v4_setter_keywords():
    args = _quiet()
    args.set_evaluate(strategy="steps", steps=10, jit_mode=False)
    args.set_testing(batch_size=2, jit_mode=False)
    args.set_lr_scheduler(name="cosine", warmup_ratio=0.1)
    assert (args.eval_steps, args.per_device_eval_batch_size, args.warmup_ratio) == (10, 2, 0.1)
    with pytest.warns(UserWarning, match="jit_mode_eval"):
        args.set_testing(jit_mode=True)
    assert args.jit_mode_eval is True


def test_trainer_tokenizer_keyword_is_processing_class(make_args):
    class Tokenizer:
        pad_token_id = 0

    tokenizer = Tokenizer()
    with pytest.warns(FutureWarning, match=r"Trainer\(tokenizer=...\) is the transformers v4 spelling; write "
                                           r"Trainer\(processing_class=...\)"):
        trainer = Trainer(model=RegressionModel(), args=make_args(), tokenizer=tokenizer)
    assert trainer.processing_class is tokenizer
    with pytest.warns(FutureWarning, match="Trainer.processing_class"):
        assert trainer.tokenizer is tokenizer
    with pytest.raises(ValueError, match="tokenizer= .* and processing_class= are both given"), \
            pytest.warns(FutureWarning):
        Trainer(model=RegressionModel(), args=make_args(), tokenizer=tokenizer, processing_class=Tokenizer())


def test_train_model_path_is_resume_from_checkpoint(make_args):
    args = make_args(max_steps=2, save_strategy="steps", save_steps=2)
    Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(8)).train()
    args.max_steps = 3
    trainer = Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(8))
    with pytest.warns(FutureWarning, match=r"train\(resume_from_checkpoint=...\)"):
        output = trainer.train(model_path=os.path.join(args.output_dir, "checkpoint-2"))
    assert output.global_step == 3 and len([e for e in trainer.state.log_history if "loss" in e]) == 3
    with pytest.raises(TypeError, match="unexpected keyword arguments: bogus"):
        trainer.train(bogus=1)


def test_prediction_loop_and_num_tokens(make_args):
    from _hf_models import ListDataset

    trainer = Trainer(model=_TokenRegressor(), args=make_args(per_device_train_batch_size=2),
                      train_dataset=ListDataset(_token_rows()))
    loader = trainer.get_eval_dataloader(ListDataset(_token_rows()))
    with pytest.warns(FutureWarning, match="Trainer.evaluation_loop"):
        output = trainer.prediction_loop(loader, "Prediction")
    assert output.predictions.shape == (4, 1) and output.num_samples == 4
    assert trainer.num_tokens(trainer.get_train_dataloader()) == 16
    assert trainer.num_tokens(trainer.get_train_dataloader(), max_steps=5) == 2 * 4 * 5


# --------------------------------------------------------------------------- training_args.bin

def test_training_args_bin_is_written_beside_the_json_and_never_loaded(make_args, monkeypatch):
    args = make_args(max_steps=2, save_strategy="steps", save_steps=2, hub_token="hf_secret_value")
    trainer = Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(8))
    trainer.train()
    trainer.save_model(os.path.join(args.output_dir, "final"))
    for folder in ("checkpoint-2", "final"):
        path = os.path.join(args.output_dir, folder, "training_args.bin")
        saved = torch.load(path, weights_only=False)  # how HF's tools read it
        assert type(saved) is TrainingArguments and saved.max_steps == 2 and saved.save_steps == 2
        assert saved.hub_token is None and b"hf_secret_value" not in open(path, "rb").read()
        assert json.load(open(os.path.join(args.output_dir, folder, "training_args.json")))["max_steps"] == 2
    loaded = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda path, *a, **k: loaded.append(os.path.basename(str(path)))
                        or real_load(path, *a, **k))
    args.max_steps = 3
    Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(8)).train(
        resume_from_checkpoint=os.path.join(args.output_dir, "checkpoint-2"))
    assert "optimizer.pt" in loaded and "training_args.bin" not in loaded


# --------------------------------------------------------------------------- enable_jit_checkpoint

def test_sigterm_with_enable_jit_checkpoint_saves_and_stops(make_args):
    import signal

    from raytrainer import TrainerCallback

    class SendSigterm(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 3:
                os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    args = make_args(max_steps=10, enable_jit_checkpoint=True)
    trainer = Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(16), callbacks=[SendSigterm()])
    output = trainer.train()
    assert output.global_step == 4  # the step running when SIGTERM arrived finished, then it stopped
    assert sorted(os.listdir(args.output_dir)) == ["checkpoint-4"]
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back
    assert "JITCheckpointCallback" not in trainer.callback_handler.callback_list
    resumed = Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(16))
    assert resumed.train(resume_from_checkpoint=True).global_step == 10
