"""``TrainingArguments`` and ``Seq2SeqTrainingArguments``: every knob of the training loop.

Field names and defaults follow the Trainer documentation; where the v4 and v5 pages disagree the
v5 default wins and the field says so. ``__post_init__`` normalises and validates everything on the
driver (see ``raytrainer._args_validation``), so the instance that is pickled to the Ray workers is
already known to be consistent. Fields that cannot take effect on this stack (TPU, Apex,
...) are accepted, listed by ``ignored_settings()`` and reported in one ``UserWarning``.
"""

import contextlib
import dataclasses
import json
import logging
import math
import os
import sys
import warnings
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import Any, Optional, Union

from raytrainer import _args_validation as _validation
from raytrainer._args_setters import GroupSetters
from raytrainer.compat import v4_names, v5_fields
from raytrainer.enums import (
    DebugOption,
    FSDPOption,
    HubStrategy,
    IntervalStrategy,
    OptimizerNames,
    SaveStrategy,
    SchedulerType,
)

_SANITIZED_TYPES = (bool, int, float, str)


def _arg(default=None, doc: str = "", *, factory=None):
    """A dataclass field carrying the ``help`` text that ``HfArgumentParser`` shows."""
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={"help": doc})
    return dataclasses.field(default=default, metadata={"help": doc})


def _user_stacklevel() -> int:
    """Stack level of the first frame outside this module and the dataclass machinery.

    The warning then points at the user's ``TrainingArguments(...)`` line, also when it is
    raised through a subclass ``__post_init__``, ``dataclasses.replace`` or a ``set_*`` helper.
    """
    internal = {__file__, dataclasses.__file__, "<string>"}  # "<string>": generated __init__
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename in internal:
        frame, level = frame.f_back, level + 1
    return level


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} must be an integer.") from None


@dataclass(repr=False)
class TrainingArguments(GroupSetters):
    """Hyperparameters and run settings for ``raytrainer.Trainer`` (same names as HF's class).

    Values are checked when the object is built: a bad field raises ``ValueError`` naming it.
    The object pickles, so it travels unchanged to every Ray worker.
    """

    # --- run identity and what to do
    output_dir: Optional[str] = _arg(  # v5: optional, defaults to "trainer_output"
        "trainer_output", "Where checkpoints and predictions are written."
    )
    overwrite_output_dir: bool = _arg(False, "Overwrite the content of output_dir.")
    do_train: bool = _arg(False, "Run training (read by scripts, not by the Trainer).")
    do_eval: bool = _arg(False, "Run evaluation; forced on when eval_strategy is not 'no'.")
    do_predict: bool = _arg(False, "Run prediction on the test set (read by scripts).")
    run_name: Optional[str] = _arg(None, "A name for the run; defaults to output_dir.")
    resume_from_checkpoint: Optional[str] = _arg(None, "Checkpoint folder for scripts to resume.")

    # --- evaluation
    eval_strategy: Union[IntervalStrategy, str] = _arg("no", "When to evaluate: no/steps/epoch.")
    eval_steps: Optional[float] = _arg(
        None, "Steps between evaluations (or a ratio < 1 of all steps); default: logging_steps."
    )
    eval_delay: Optional[float] = _arg(0, "Epochs or steps to wait before the first evaluation.")
    eval_on_start: bool = _arg(False, "Evaluate once before training as a sanity check.")
    prediction_loss_only: bool = _arg(False, "Return only the loss from evaluation/prediction.")
    per_device_train_batch_size: int = _arg(8, "Training batch size per worker device.")
    per_device_eval_batch_size: int = _arg(8, "Evaluation batch size per worker device.")
    gradient_accumulation_steps: int = _arg(1, "Batches to accumulate before an optimizer step.")
    eval_accumulation_steps: Optional[int] = _arg(
        None, "Prediction steps to accumulate on device before moving results to CPU."
    )
    eval_do_concat_batches: bool = _arg(True, "Concatenate evaluation outputs across batches.")
    eval_use_gather_object: bool = _arg(False, "Gather arbitrary Python objects across workers.")
    batch_eval_metrics: bool = _arg(False, "Call compute_metrics once per evaluation batch.")
    include_inputs_for_metrics: bool = _arg(
        False, "Deprecated: use include_for_metrics=['inputs']."
    )
    include_for_metrics: list[str] = _arg(
        doc="Extra data passed to compute_metrics: 'inputs' and/or 'loss'.", factory=list
    )
    torch_empty_cache_steps: Optional[int] = _arg(
        None, "Steps between torch.<device>.empty_cache() calls; None never empties."
    )

    # --- optimisation
    learning_rate: float = _arg(5e-5, "Initial learning rate.")
    weight_decay: float = _arg(0.0, "Weight decay for all but bias and LayerNorm weights.")
    adam_beta1: float = _arg(0.9, "beta1 of Adam-type optimizers.")
    adam_beta2: float = _arg(0.999, "beta2 of Adam-type optimizers.")
    adam_epsilon: float = _arg(1e-8, "epsilon of Adam-type optimizers.")
    max_grad_norm: float = _arg(1.0, "Gradient clipping norm; 0 disables clipping.")
    num_train_epochs: float = _arg(3.0, "Training epochs (the fraction of a last one counts).")
    max_steps: int = _arg(-1, "Total optimizer steps; overrides num_train_epochs when > 0.")
    lr_scheduler_type: Union[SchedulerType, str] = _arg("linear", "Learning-rate schedule.")
    lr_scheduler_kwargs: Union[dict, str] = _arg(
        doc="Extra keyword arguments for the scheduler (dict or JSON).", factory=dict
    )
    warmup_ratio: float = _arg(0.0, "Fraction of total steps used for linear warmup.")
    warmup_steps: float = _arg(  # v5: an int count, or a float in [0, 1) read as a ratio
        0, "Warmup steps; a value below 1 is a ratio of total steps. Overrides warmup_ratio."
    )
    optim: Union[OptimizerNames, str] = _arg(  # v5: the fused AdamW kernel where torch has it
        v5_fields.default_optimizer_name(), "Optimizer name."
    )
    optim_args: Optional[str] = _arg(None, "Extra optimizer arguments as 'key=value,key=value'.")
    optim_target_modules: Union[None, str, list[str]] = _arg(
        None, "Module names that GaLore-style optimizers target."
    )
    label_smoothing_factor: float = _arg(0.0, "Label smoothing in [0, 1); 0 disables it.")
    neftune_noise_alpha: Optional[float] = _arg(None, "NEFTune noise alpha; None disables it.")
    gradient_checkpointing: bool = _arg(False, "Trade compute for memory with checkpointing.")
    gradient_checkpointing_kwargs: Optional[Union[dict, str]] = _arg(
        None, "Keyword arguments for gradient_checkpointing_enable (dict or JSON)."
    )
    activation_checkpointing: Optional[bool] = _arg(
        None, "v5 name of gradient_checkpointing; when set, it wins over gradient_checkpointing."
    )
    activation_checkpointing_kwargs: Optional[Union[dict, str]] = _arg(
        None, "v5 name of gradient_checkpointing_kwargs; when set, it wins."
    )
    use_cache: bool = _arg(False, "Sets model.config.use_cache (models with a config).")
    auto_find_batch_size: bool = _arg(False, "Halve the batch size on out-of-memory and retry.")
    average_tokens_across_devices: bool = _arg(
        True, "Average the token count across workers when normalising the loss."
    )

    # --- logging
    log_level: str = _arg("passive", "Log level on the main process (or 'passive').")
    log_level_replica: str = _arg("warning", "Log level on replica processes.")
    log_on_each_node: bool = _arg(True, "Log from the main process of every node.")
    logging_dir: Optional[str] = _arg(None, "Log folder; default output_dir/runs/<time>_<host>.")
    logging_strategy: Union[IntervalStrategy, str] = _arg("steps", "When to log: no/steps/epoch.")
    logging_first_step: bool = _arg(False, "Also log the first global step.")
    logging_steps: float = _arg(500, "Steps between logs (or a ratio < 1 of total steps).")
    logging_nan_inf_filter: bool = _arg(True, "Leave nan/inf losses out of the logged average.")
    report_to: Union[None, str, list[str]] = _arg(  # v5 default "none" (v4: "all")
        "none", "Integrations to report to (tensorboard, mlflow, wandb); 'none', or 'all' installed."
    )
    disable_tqdm: Optional[bool] = _arg(None, "Disable progress bars.")
    skip_memory_metrics: bool = _arg(True, "Skip memory profiling in the metrics.")
    include_tokens_per_second: bool = _arg(False, "Report tokens per second per device.")
    include_num_input_tokens_seen: Union[str, bool] = _arg(  # v5: True means "all"
        "no", "Count input tokens seen: 'all', 'non_padding' or 'no' (True/False: 'all'/'no')."
    )
    project: str = _arg("huggingface", "Project name for tracking integrations (Trackio).")
    trackio_space_id: Optional[str] = _arg(None, "Trackio Space id (Trackio is not shipped).")
    trackio_bucket_id: Optional[str] = _arg(None, "Trackio Bucket id (Trackio is not shipped).")
    trackio_static_space_id: Optional[Union[str, bool]] = _arg(
        None, "Trackio static Space (Trackio is not shipped)."
    )

    # --- checkpoints
    save_strategy: Union[SaveStrategy, str] = _arg("steps", "When to save: no/steps/epoch/best.")
    save_steps: float = _arg(500, "Steps between checkpoints (or a ratio < 1 of total steps).")
    save_total_limit: Optional[int] = _arg(None, "Keep at most this many checkpoints.")
    save_safetensors: bool = _arg(True, "Save state dicts with safetensors.")
    save_on_each_node: bool = _arg(False, "Save on every node instead of the main one only.")
    save_only_model: bool = _arg(False, "Save weights only (no optimizer/scheduler/RNG state).")
    enable_jit_checkpoint: bool = _arg(
        False, "Save a checkpoint and stop when SIGTERM arrives (always on for Ray workers)."
    )
    restore_callback_states_from_checkpoint: bool = _arg(
        False, "Restore callback states from the checkpoint when resuming."
    )
    load_best_model_at_end: bool = _arg(False, "Load the best checkpoint when training ends.")
    metric_for_best_model: Optional[str] = _arg(None, "Metric that ranks checkpoints.")
    greater_is_better: Optional[bool] = _arg(None, "Whether a larger metric is better.")

    # --- reproducibility and data
    seed: int = _arg(42, "Random seed set at the start of training.")
    data_seed: Optional[int] = _arg(None, "Seed for data samplers; defaults to seed.")
    full_determinism: bool = _arg(False, "Use deterministic algorithms (slower).")
    ignore_data_skip: bool = _arg(False, "On resume, do not skip already-seen batches.")
    dataloader_drop_last: bool = _arg(False, "Drop the last incomplete batch.")
    dataloader_num_workers: int = _arg(0, "Data-loading subprocesses; 0 loads in the main process.")
    dataloader_pin_memory: bool = _arg(True, "Pin memory in data loaders.")
    dataloader_persistent_workers: bool = _arg(False, "Keep loader processes alive between epochs.")
    dataloader_prefetch_factor: Optional[int] = _arg(None, "Batches prefetched per loader process.")
    past_index: int = _arg(-1, "Output index of the model's past state (mems); -1 disables.")
    remove_unused_columns: bool = _arg(True, "Drop dataset columns the model's forward ignores.")
    label_names: Optional[list[str]] = _arg(None, "Input keys that hold the labels.")
    group_by_length: bool = _arg(False, "Batch samples of similar length together.")
    length_column_name: str = _arg("length", "Column with precomputed lengths.")
    train_sampling_strategy: str = _arg(
        "random", "Training order: random, sequential, group_by_length or batch_rebalance."
    )
    dataloader_multiprocessing_context: Optional[str] = _arg(
        None, "Start method of loader processes: fork, spawn or forkserver."
    )
    dataloader_in_order: bool = _arg(True, "Yield batches in dispatch order (False: as ready).")

    # --- precision and compilation
    use_cpu: bool = _arg(False, "Train on CPU even when a GPU is present.")
    bf16: bool = _arg(False, "bfloat16 mixed precision.")
    fp16: bool = _arg(False, "float16 mixed precision.")
    fp16_opt_level: str = _arg("O1", "Apex AMP level (Apex is not used here).")
    fp16_backend: str = _arg("auto", "Deprecated: use half_precision_backend.")
    half_precision_backend: str = _arg("auto", "Mixed-precision backend: auto/apex/cpu_amp.")
    bf16_full_eval: bool = _arg(False, "Evaluate fully in bfloat16.")
    fp16_full_eval: bool = _arg(False, "Evaluate fully in float16.")
    tf32: Optional[bool] = _arg(None, "Allow TF32 matmuls on Ampere+ GPUs.")
    jit_mode_eval: bool = _arg(False, "TorchScript-trace the model for inference (not used).")
    use_ipex: bool = _arg(False, "Intel Extension for PyTorch (not used).")
    use_mps_device: bool = _arg(False, "Deprecated: MPS is chosen automatically.")
    torchdynamo: Optional[str] = _arg(None, "Deprecated: use torch_compile_backend.")
    torch_compile: bool = _arg(False, "Compile the model with torch.compile.")
    torch_compile_backend: Optional[str] = _arg(None, "torch.compile backend; sets torch_compile.")
    torch_compile_mode: Optional[str] = _arg(None, "torch.compile mode; implies torch_compile.")
    use_liger_kernel: bool = _arg(False, "Liger kernels (not integrated).")
    liger_kernel_config: Optional[dict] = _arg(None, "Liger kernel options (not integrated).")

    # --- distribution
    local_rank: int = _arg(-1, "Process rank; Ray Train assigns ranks, so this is not read.")
    ddp_backend: Optional[str] = _arg(None, "Process-group backend: gloo or nccl.")
    ddp_find_unused_parameters: Optional[bool] = _arg(None, "DDP find_unused_parameters.")
    ddp_bucket_cap_mb: Optional[int] = _arg(None, "DDP bucket_cap_mb.")
    ddp_broadcast_buffers: Optional[bool] = _arg(None, "DDP broadcast_buffers.")
    ddp_static_graph: Optional[bool] = _arg(None, "DDP static_graph.")
    parallelism_config: Optional[Any] = _arg(
        None, "accelerate ParallelismConfig (tp/cp/fsdp sizes; not used: Ray runs plain DDP)."
    )
    ddp_timeout: int = _arg(1800, "Seconds before process-group operations time out.")
    fsdp: Union[list[FSDPOption], str, bool, None] = _arg(
        "", "FSDP options, e.g. 'full_shard auto_wrap'."
    )
    fsdp_config: Optional[Union[dict, str]] = _arg(None, "FSDP config: dict, JSON or JSON file.")
    deepspeed: Optional[Union[dict, str]] = _arg(None, "DeepSpeed config: dict, JSON or JSON file.")
    accelerator_config: Optional[Union[dict, str]] = _arg(
        None, "Accelerator config: dict, JSON or JSON file."
    )
    split_batches: Optional[bool] = _arg(None, "Deprecated: use accelerator_config.")
    tpu_num_cores: Optional[int] = _arg(None, "TPU cores (TPUs are not supported).")
    tpu_metrics_debug: bool = _arg(False, "Deprecated: TPU debug metrics (not supported).")
    debug: Union[str, list[DebugOption]] = _arg("", "Debug features, space separated.")
    ray_scope: str = _arg("last", "Results Ray Tune compares: last/all/last-5-avg/last-10-avg.")

    # --- Hugging Face Hub (raytrainer.hub)
    push_to_hub: bool = _arg(False, "Push the model to the Hub at each save (see hub_strategy).")
    hub_model_id: Optional[str] = _arg(None, "Hub repository name; default: the name of output_dir.")
    hub_strategy: Union[HubStrategy, str] = _arg(
        "every_save", "What to push and when: end/every_save/checkpoint/all_checkpoints."
    )
    hub_token: Optional[str] = _arg(None, "Hub token (default: HF_TOKEN or the saved login; never written).")
    hub_private_repo: Optional[bool] = _arg(None, "Create the Hub repository as private.")
    hub_always_push: bool = _arg(False, "Push each save even while the previous push is running.")
    hub_revision: Optional[str] = _arg(None, "Hub branch or revision to push to (v5).")

    # --- transformers v4 spellings: accepted with a FutureWarning and moved to the v5 field
    # (raytrainer.compat.v4_names); None means "not given", and they stay None afterwards.
    evaluation_strategy: Optional[Union[IntervalStrategy, str]] = _arg(
        None, "Deprecated: use eval_strategy."
    )
    per_gpu_train_batch_size: Optional[int] = _arg(
        None, "Deprecated: use per_device_train_batch_size."
    )
    per_gpu_eval_batch_size: Optional[int] = _arg(None, "Deprecated: use per_device_eval_batch_size.")
    no_cuda: Optional[bool] = _arg(None, "Deprecated: use use_cpu.")
    adafactor: Optional[bool] = _arg(None, "Deprecated: use optim='adafactor'.")
    fsdp_min_num_params: Optional[int] = _arg(
        None, "Deprecated: use fsdp_config={'min_num_params': ...}."
    )
    fsdp_transformer_layer_cls_to_wrap: Optional[str] = _arg(
        None, "Deprecated: use fsdp_config={'transformer_layer_cls_to_wrap': [...]}."
    )
    dispatch_batches: Optional[bool] = _arg(
        None, "Deprecated: use accelerator_config={'dispatch_batches': ...}."
    )
    push_to_hub_model_id: Optional[str] = _arg(None, "Deprecated: use hub_model_id.")
    push_to_hub_organization: Optional[str] = _arg(
        None, "Deprecated: use hub_model_id='<organization>/<name>'."
    )
    push_to_hub_token: Optional[str] = _arg(None, "Deprecated: use hub_token.")
    use_legacy_prediction_loop: Optional[bool] = _arg(
        None, "Deprecated, no effect: evaluation_loop always runs."
    )
    mp_parameters: Optional[str] = _arg(None, "Deprecated, no effect: SageMaker model parallelism.")

    def __post_init__(self):
        v4_names.move_deprecated_values(self, stacklevel=_user_stacklevel() + 1)
        _validation.normalise_and_validate(self)
        v5_fields.normalise(self)
        notes = self.ignored_settings()
        if notes:
            lines = "\n".join(f"  - {note}" for note in notes)
            warnings.warn(
                f"{type(self).__name__}: these settings have no effect in raytrainer:\n{lines}",
                UserWarning,
                stacklevel=_user_stacklevel(),
            )

    def ignored_settings(self) -> list[str]:
        """Each field set to a non-default value that cannot apply here, with the reason."""
        defaults = {f.name: f.default for f in dataclasses.fields(self) if f.init}
        return _validation.list_ignored_settings(self) + v5_fields.ignored_settings(self, defaults)

    # ------------------------------------------------------------------ derived sizes and ranks

    @property
    def train_batch_size(self) -> int:
        """Per-step training batch on one worker (each Ray worker drives one device)."""
        return self.per_device_train_batch_size

    @property
    def eval_batch_size(self) -> int:
        """Per-step evaluation batch on one worker."""
        return self.per_device_eval_batch_size

    @property
    def world_size(self) -> int:
        """Number of training processes; Ray Train exports ``WORLD_SIZE`` in its workers."""
        return _env_int("WORLD_SIZE", 1)

    @property
    def process_index(self) -> int:
        """Global rank of this process (``RANK``), 0 outside Ray workers."""
        return _env_int("RANK", 0)

    @property
    def local_process_index(self) -> int:
        """Rank of this process on its node (``LOCAL_RANK``), 0 outside Ray workers."""
        return _env_int("LOCAL_RANK", 0)

    @property
    def should_log(self) -> bool:
        """Whether this process logs: rank 0, or local rank 0 when ``log_on_each_node``."""
        index = self.local_process_index if self.log_on_each_node else self.process_index
        return index == 0

    @property
    def should_save(self) -> bool:
        """Whether this process writes files: rank 0, or local rank 0 when ``save_on_each_node``."""
        index = self.local_process_index if self.save_on_each_node else self.process_index
        return index == 0

    @property
    def device(self):
        """``cuda:<local rank>`` when a GPU is visible and ``use_cpu`` is off, else ``cpu``."""
        import torch  # imported here so that building arguments stays cheap

        if self.use_cpu or not torch.cuda.is_available():
            return torch.device("cpu")
        # The modulo keeps the index valid when a worker only sees its own GPU.
        return torch.device("cuda", self.local_process_index % torch.cuda.device_count())

    @property
    def n_gpu(self) -> int:
        """GPUs this process drives: one per Ray worker at most."""
        return 1 if self.device.type == "cuda" else 0

    @property
    def place_model_on_device(self) -> bool:
        """Whether the Trainer moves the model to ``device`` itself (always, on this stack)."""
        return True

    @property
    def ddp_timeout_delta(self) -> timedelta:
        """``ddp_timeout`` as the ``timedelta`` that ``init_process_group`` expects."""
        return timedelta(seconds=self.ddp_timeout)

    # ------------------------------------------------------------------ process helpers

    def get_process_log_level(self) -> int:
        """Log level for this process: ``log_level`` on the logging process, else the replica one.

        ``"passive"`` keeps the current level of the ``raytrainer`` logger.
        """
        name = self.log_level if self.should_log else self.log_level_replica
        level = _validation.LOG_LEVELS[name]
        if level == -1:
            return logging.getLogger("raytrainer").getEffectiveLevel()
        return level

    @contextlib.contextmanager
    def main_process_first(self, local: bool = True, desc: str = "work"):
        """Run the block on the main process first while the others wait at a barrier.

        ``local=True`` picks the main process of each node (node-local disks); ``local=False``
        the global rank 0 (shared filesystem). Without an initialised process group this is a
        no-op, so single-process code can use it unconditionally.
        """
        import torch.distributed as dist

        if self.world_size <= 1 or not (dist.is_available() and dist.is_initialized()):
            yield
            return
        is_main = (self.local_process_index if local else self.process_index) == 0
        logging.getLogger("raytrainer").debug("%s: main process first (local=%s)", desc, local)
        try:
            if not is_main:
                dist.barrier()  # wait until the main process has done the work
            yield
        finally:
            if is_main:
                dist.barrier()  # release the waiting replicas

    def get_warmup_steps(self, num_training_steps: int) -> int:
        """Warmup steps for a run of ``num_training_steps`` optimizer steps.

        A ``warmup_steps`` count of 1 or more wins; a ``warmup_steps`` below 1, or else
        ``warmup_ratio``, is a fraction of the total, rounded up.
        """
        if isinstance(num_training_steps, bool) or not isinstance(num_training_steps, int):
            raise ValueError(f"num_training_steps must be an int, got {num_training_steps!r}.")
        if num_training_steps < 0:
            raise ValueError(f"num_training_steps must be >= 0, got {num_training_steps}.")
        if self.warmup_steps >= 1:
            return int(self.warmup_steps)
        ratio = self.warmup_steps if self.warmup_steps > 0 else self.warmup_ratio
        return _ceil_product(num_training_steps, ratio)

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        """Init fields as plain values: enums and torch dtypes become strings, ``*_token`` values
        are masked. The v4 spellings are left out: their values already live in the v5 fields."""
        result = {}
        for item in dataclasses.fields(self):
            if not item.init or item.name in v4_names.DEPRECATED_FIELDS:
                continue
            value = _plain(getattr(self, item.name))
            if item.name == "parallelism_config":
                value = v5_fields.plain_parallelism_config(value)
            if item.name.endswith("_token"):
                value = f"<{item.name.upper()}>"
            result[item.name] = value
        return result

    def to_json_string(self) -> str:
        """``to_dict()`` as indented JSON (secrets masked)."""
        return json.dumps(self.to_dict(), indent=2)

    def to_sanitized_dict(self) -> dict[str, Any]:
        """Flat scalars only (others as ``str``), plus the batch sizes: for hparams displays."""
        values = self.to_dict()
        values["train_batch_size"] = self.train_batch_size
        values["eval_batch_size"] = self.eval_batch_size
        return {k: v if type(v) in _SANITIZED_TYPES else str(v) for k, v in values.items()}

    def __repr__(self) -> str:
        # Built from to_dict() so that tokens never reach logs or tracebacks.
        body = "".join(f"{key}={value!r},\n" for key, value in sorted(self.to_dict().items()))
        return f"{type(self).__name__}(\n{body})"

    __str__ = __repr__

    # ------------------------------------------------------------------ grouped setters


def _ceil_product(count: int, ratio: float) -> int:
    # round() first so that 10 * 0.3 (2.9999999999999996 or 3.0000000000000004) gives 3, not 4.
    return math.ceil(round(count * ratio, 9))


def _plain(value):
    """Enums become their values and torch dtypes their names (``torch.float32`` -> ``"float32"``,
    as v5 writes them); lists and dicts are copied so callers cannot mutate ``self``."""
    if isinstance(value, Enum):
        return value.value
    if type(value).__name__ == "dtype" and type(value).__module__ == "torch":
        return str(value).rpartition(".")[2]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclass(repr=False)
class Seq2SeqTrainingArguments(TrainingArguments):
    """``TrainingArguments`` plus the generation settings that ``Seq2SeqTrainer`` reads."""

    sortish_sampler: bool = _arg(
        False, "Sort samples by length within random chunks (the group_by_length sampler)."
    )
    predict_with_generate: bool = _arg(False, "Use generate() to compute ROUGE/BLEU-style metrics.")
    generation_max_length: Optional[int] = _arg(None, "max_length for generate() in evaluation.")
    generation_num_beams: Optional[int] = _arg(None, "num_beams for generate() in evaluation.")
    generation_config: Optional[Union[str, os.PathLike, dict, Any]] = _arg(
        None, "Generation config: a path/name, a dict, or a config object."
    )

    def __post_init__(self):
        _validation.validate_generation_settings(self)
        super().__post_init__()

    def to_dict(self) -> dict[str, Any]:
        """Like ``TrainingArguments.to_dict``, with a config object turned into a dict."""
        result = super().to_dict()
        config = result["generation_config"]
        if config is not None and not isinstance(config, (str, dict)):
            result["generation_config"] = config.to_dict()
        return result
