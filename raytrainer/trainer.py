"""The ``Trainer`` facade: HF's constructor and override points, each a short delegation.

The loop itself lives in ``raytrainer.loop``; where it runs (in this process, or on Ray workers) is
decided by ``raytrainer.runtime``. Every method here that a user may override keeps HF's signature,
and the loop calls it through the Trainer, so a subclass's version is the one that runs.

Groups of methods that read best together live beside the code they drive and are mixed in:
the dataloaders (``data/loader_methods.py``), the optimizer and scheduler (``optimizer_methods.py``),
evaluation and prediction (``evaluation_methods.py``), the Hub (``hub/methods.py``) and v4's names
(``compat/trainer_v4.py``). They are Trainer methods all the same: a subclass overrides them as usual.
"""

import contextlib
import logging
import os
from collections.abc import Mapping
from typing import Callable, Optional, Union

import torch
import torch.nn as nn

from . import checkpoints as _checkpoint
from . import metrics_io
from .args import TrainingArguments
from .callbacks import TrainerCallback, default_callback_handler
from .compat.trainer_v4 import V4TrainerNames, processing_class_from, resume_from_v4_train_kwargs
from .data.collators import default_collator_for
from .data.loader_methods import DataLoaderMethods
from .evaluation_methods import EvaluationMethods
from .hub import HubMethods
from .integrations import added_callbacks
from .logging_setup import apply_log_level
from .loop.collectives import sum_over_ranks
from .loop.losses import loss_from_outputs
from .loop.run_state import RunState, TrainRequest
from .loop.training import fetch_batches
from .memory_metrics import MemoryTracker
from .model_settings import apply_model_settings, build_label_smoother
from .modeling import build_model_with, estimate_training_flos, inspect_model, unwrap_model
from .nested import move_to_device
from .optimizer_methods import OptimizerMethods
from .outputs import speed_metrics
from .overrides import accepts_argument
from .probe import probe_model
from .seeding import seed_from_args
from .state import TrainerControl, TrainerState
from .validation import check_output_locations, rebuilt_on_worker, validate_trainer_inputs

logger = logging.getLogger("raytrainer")


class Trainer(V4TrainerNames, HubMethods, DataLoaderMethods, OptimizerMethods, EvaluationMethods):
    """A training and evaluation loop for PyTorch models with the HF ``Trainer`` API, run by Ray Train.

    Arguments are those of ``transformers.Trainer`` plus Ray's own configuration objects:

    - ``scaling_config`` (``ray.train.ScalingConfig``): how many Ray Train workers run the loop.
      ``ScalingConfig(num_workers=0)`` (the default) runs it in this process (local mode),
      with the very model, datasets and callbacks passed here.
    - ``run_config`` (``ray.train.RunConfig``): experiment name, storage and failure handling.

    Every argument is validated here, before any training starts.
    """

    def __new__(cls, *args, **kwargs):
        trainer = super().__new__(cls)
        # the exact constructor call, so Ray workers can rebuild this (sub)class the same way
        trainer._constructor_call = (args, kwargs)
        return trainer

    def __init__(
        self,
        model: Optional[nn.Module] = None,
        args: Optional[TrainingArguments] = None,
        data_collator: Optional[Callable] = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        model_init: Optional[Callable] = None,
        compute_loss_func: Optional[Callable] = None,
        compute_metrics: Optional[Callable] = None,
        callbacks: Optional[list] = None,
        optimizers: tuple = (None, None),
        optimizer_cls_and_kwargs: Optional[tuple] = None,
        preprocess_logits_for_metrics: Optional[Callable] = None,
        *,
        scaling_config=None,
        run_config=None,
        tokenizer=None,
    ):
        args = self._init_arguments(args)
        self._init_bookkeeping(model_init)
        seed_from_args(args)
        if model is None and model_init is not None:
            model = self.call_model_init()
        # called here, not in a helper, so that v4's tokenizer= warning points at the user's line
        processing_class = processing_class_from(processing_class, tokenizer)
        self._init_model_and_data(model, train_dataset, eval_dataset, processing_class, data_collator)
        self._init_loss_metrics_and_optimizers(compute_loss_func, compute_metrics, preprocess_logits_for_metrics,
                                               optimizers, optimizer_cls_and_kwargs)
        self.scaling_config = scaling_config
        self.run_config = run_config
        checked_on_driver = rebuilt_on_worker()
        if not checked_on_driver:
            validate_trainer_inputs(self, optimizers=optimizers, callbacks=callbacks)
        self._init_model_facts(model)
        self._init_run_slots()
        self._init_state_and_callbacks(callbacks)
        if args.push_to_hub:
            self.init_hf_repo()  # an unreachable Hub or a refused token fails here, before training
        if not checked_on_driver:
            self._probe_loss_kwargs_use()
        apply_model_settings(model, args)
        self.control = self.callback_handler.on_init_end(self.args, self.state, self.control)
        self._memory_tracker.stop_and_update_metrics("init")

    # ------------------------------------------------------------------ the constructor's steps, in order
    def _init_arguments(self, args: Optional[TrainingArguments]) -> TrainingArguments:
        """Default arguments, the memory count of the "init" stage, the log level."""
        self.args = args if args is not None else TrainingArguments(output_dir="tmp_trainer")
        self._memory_tracker = MemoryTracker(self.args.skip_memory_metrics)
        self._memory_tracker.start("init")
        apply_log_level(self.args)  # "passive" keeps the level the user set
        return self.args

    def _init_bookkeeping(self, model_init: Optional[Callable]) -> None:
        self.model_init = model_init
        self.hp_name = None
        # after a sharded train() on Ray workers: the folder of the consolidated trained weights (the
        # driver's self.model keeps the weights it was given; evaluate/predict/save_model use this)
        self.final_model_dir = None
        self.hp_search_backend = None
        self.is_in_train = False

    def _init_model_and_data(self, model, train_dataset, eval_dataset, processing_class, data_collator) -> None:
        self.model = model
        self.model_wrapped = model
        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self.processing_class = processing_class
        self.data_collator = data_collator if data_collator is not None else default_collator_for(processing_class)

    def _init_loss_metrics_and_optimizers(self, compute_loss_func, compute_metrics, preprocess_logits_for_metrics,
                                          optimizers: tuple, optimizer_cls_and_kwargs) -> None:
        self.compute_loss_func = compute_loss_func
        self.compute_metrics = compute_metrics
        self.preprocess_logits_for_metrics = preprocess_logits_for_metrics
        self.optimizer, self.lr_scheduler = optimizers
        self._given_optimizers = optimizers  # what a retry with a smaller batch size starts from again
        self.optimizer_cls_and_kwargs = optimizer_cls_and_kwargs

    def _init_model_facts(self, model) -> None:
        """What the loop needs to know about the model, read once from its forward signature."""
        args = self.args
        self._signature = inspect_model(model)
        self.model_accepts_loss_kwargs = self._signature.accepts_loss_kwargs
        self.can_return_loss = self._signature.can_return_loss
        self.label_names = list(args.label_names) if args.label_names is not None else list(self._signature.label_names)
        self.label_smoother = build_label_smoother(args, model)
        self.is_model_parallel = False
        self.place_model_on_device = args.place_model_on_device
        self.neftune_noise_alpha = args.neftune_noise_alpha

    def _init_run_slots(self) -> None:
        self._run = None  # the RunState of the training or evaluation under way (see _running)
        self._model_strategy = None  # the parallel strategy that sharded self.model, if one did
        self._train_batch_size = self.args.train_batch_size  # reduced by auto_find_batch_size on OOM
        self.current_gradient_accumulation_steps = self.args.gradient_accumulation_steps

    def _init_state_and_callbacks(self, callbacks: Optional[list]) -> None:
        self.state = TrainerState(
            is_local_process_zero=self.is_local_process_zero(),
            is_world_process_zero=self.is_world_process_zero(),
        )
        self.control = TrainerControl()
        # report_to's integrations come before the user's callbacks, as in HF (a missing library fails here)
        self.callback_handler = default_callback_handler(
            self.args, added_callbacks(self, callbacks) + list(callbacks or []),
            self.model, self.processing_class, self.optimizer, self.lr_scheduler,
        )

    def _probe_loss_kwargs_use(self) -> None:
        """Whether the loss uses ``num_items_in_batch`` is measured on one example, not guessed
        from the signature (``probe.py``); a subclass's own ``compute_loss`` is probed as it is."""
        uses_num_items = probe_model(self, overrides_compute_loss=type(self).compute_loss is not Trainer.compute_loss)
        if uses_num_items is not None:
            self.model_accepts_loss_kwargs = uses_num_items

    # ------------------------------------------------------------------ model_init and train
    def call_model_init(self, trial=None) -> nn.Module:
        """Build a fresh model with ``model_init``, passing the trial when it takes one argument."""
        return build_model_with(self.model_init, trial)

    def train(self, resume_from_checkpoint: Union[str, bool, None] = None, trial=None,
              ignore_keys_for_eval: Optional[list] = None, **kwargs):
        """Run the training loop through Ray Train and return a ``TrainOutput``.

        ``resume_from_checkpoint`` is a checkpoint folder, or True for the latest one in
        ``output_dir``. With ``model_init``, every call starts from a freshly built model.
        """
        from .runtime.launch import run_training

        resume_from_checkpoint = resume_from_v4_train_kwargs(kwargs, resume_from_checkpoint)
        if resume_from_checkpoint is False:
            resume_from_checkpoint = None
        if resume_from_checkpoint is not None:
            resume_from_checkpoint = _checkpoint.resolve_resume_checkpoint(self.args.output_dir, resume_from_checkpoint)
        if self.model_init is not None:
            from .hpo.trial import model_init_trial

            seed_from_args(self.args)
            self.model = self.model_wrapped = self.call_model_init(model_init_trial(trial))
        check_output_locations(self.args)
        self.final_model_dir = None  # an earlier sharded run's weights are not this run's
        return run_training(self, TrainRequest(resume_from_checkpoint, trial, ignore_keys_for_eval))

    @contextlib.contextmanager
    def _running(self, run: RunState):
        """Bind the state of a training or evaluation run for its duration: the override points
        (``compute_loss``, ``training_step``, the autocast context, ...) read it from here."""
        previous, self._run = self._run, run
        self._train_batch_size = run.train_batch_size
        if run.strategy.shards_model:
            self._model_strategy = run.strategy  # the model stays sharded: later evaluations and saves use it
        try:
            yield run
        finally:
            self._run = previous

    def _evaluation_run(self) -> RunState:
        """The training run's state during training, else a fresh one with evaluation precision."""
        if self.is_in_train and self._run is not None:
            return self._run
        return RunState.for_evaluation(self.args, self._train_batch_size, self._model_strategy)

    @property
    def scaler(self):
        """The fp16 gradient scaler of the run under way (None without fp16 or outside a run)."""
        return self._run.scaler if self._run is not None else None

    @property
    def current_flos(self) -> float:
        """Floating point operations counted since they were last added to ``state.total_flos``."""
        return self._run.flos if self._run is not None else 0.0

    @current_flos.setter
    def current_flos(self, value: float) -> None:
        if self._run is not None:
            self._run.flos = value

    # ------------------------------------------------------------------ hyperparameter search
    def hyperparameter_search(self, hp_space=None, compute_objective: Optional[Callable] = None, n_trials: int = 20,
                              direction: Union[str, list] = "minimize", backend=None,
                              hp_name: Optional[Callable] = None, **kwargs):
        """Search hyperparameters with Optuna (``backend="optuna"``, the default) or Ray Tune
        (``backend="ray"``); returns the best trial's ``BestRun``, or the Pareto front's list of them
        when ``direction`` lists several objectives.

        Every trial trains a fresh model from ``model_init(trial)`` with TrainingArguments whose
        fields are set from the sampled values; checkpoints go to ``output_dir/run-<trial id>/``.
        The objective is ``compute_objective(eval metrics)`` (default: the evaluation loss, or the
        sum of the other metrics). ``hp_space`` is an Optuna define-by-run function (both
        backends), a Ray Tune dict (``"ray"``), a preset name or YAML path (``searchspaces/``), or
        a ``SearchSpace``. Extra keyword arguments go to the backend (Optuna: ``create_study`` and
        ``optimize`` options such as ``sampler``, ``pruner``, ``storage``, ``n_jobs``, ``timeout``;
        Ray: ``search_alg``, ``scheduler``, ``resources_per_trial``, ``max_concurrent_trials``,
        ``time_budget_s``, ``max_failures``, ``resume``); both take ``scaling_config`` (each trial on
        Ray Train workers) and ``load_best_model`` (load the best checkpoint into ``self.model``).
        With ``n_jobs`` > 1, trials without workers train one in this process and the others in
        processes of their own (trials in threads would share torch's random generator).
        A results table (CSV, JSON) and plot (PNG) are written to ``output_dir``.
        """
        from .hpo.search import run_hyperparameter_search

        return run_hyperparameter_search(self, hp_space=hp_space, compute_objective=compute_objective,
                                         n_trials=n_trials, direction=direction, backend=backend, hp_name=hp_name,
                                         **kwargs)

    def _report_to_hp_search(self, trial, step: int, metrics: dict) -> None:
        """After each evaluation of a search trial: hand the objective to the search, which may
        stop the trial (an Optuna pruner, a Tune scheduler). Nothing happens outside a search."""
        from .hpo.trial import SearchTrial

        if isinstance(trial, SearchTrial):
            trial.report(self, step, metrics)

    # ------------------------------------------------------------------ the step maths
    def _prepare_inputs(self, inputs):
        if not isinstance(inputs, Mapping):
            raise TypeError(
                f"Trainer: a batch must be a dict of model inputs, got {type(inputs).__name__}. Make the "
                "dataset return dicts (e.g. {'input': x, 'labels': y}) or pass a data_collator that builds them; "
                "a subclass may also override compute_loss to handle other batch types."
            )
        if not inputs:
            raise ValueError("Trainer: the batch is empty after removing unused columns; check the dataset's "
                             "keys against the model's forward() arguments.")
        run = self._run if self._run is not None else self._evaluation_run()
        if run.device.type != "cpu":  # CPU batches from a CPU dataloader are already in place
            inputs = move_to_device(inputs, run.device)
        inputs = run.strategy.prepare_inputs(inputs)
        if self.args.past_index >= 0 and run.past is not None:
            inputs["mems"] = run.past
        return inputs

    def _remember_past(self, past) -> None:
        """Keep the model's memory output for the next batch (``past_index >= 0``)."""
        if self._run is not None:
            self._run.past = past

    def autocast_smart_context_manager(self, cache_enabled: Optional[bool] = True):
        run = self._run if self._run is not None else self._evaluation_run()
        return run.precision.autocast()

    def compute_loss_context_manager(self):
        return self.autocast_smart_context_manager()

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        """The loss of one batch: the model's own, or ``compute_loss_func``/label smoothing on its logits."""
        pop_labels = (self.label_smoother is not None or self.compute_loss_func is not None) and "labels" in inputs
        labels = inputs.pop("labels") if pop_labels else None
        if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            inputs = {**inputs, "num_items_in_batch": num_items_in_batch}
        outputs = model(**inputs)
        if self.args.past_index >= 0:
            self._remember_past(outputs[self.args.past_index])
        if labels is not None:
            if self.compute_loss_func is not None:
                loss = self.compute_loss_func(outputs, labels, num_items_in_batch=num_items_in_batch)
            else:
                loss = self.label_smoother(outputs, labels, shift_labels=self._signature.shifts_labels)
        else:
            loss = loss_from_outputs(outputs, model)
        if (self.args.average_tokens_across_devices and num_items_in_batch is not None
                and (self.model_accepts_loss_kwargs or self.compute_loss_func is not None)):
            # num_items_in_batch counts every rank's tokens, DDP averages gradients over ranks
            loss = loss * self.args.world_size
        return (loss, outputs) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None) -> torch.Tensor:
        """Forward and backward of one micro-batch; returns the detached loss, scaled for accumulation."""
        if not model.training:  # after an evaluation; a no-op call would still walk every module
            model.train()
        inputs = self._prepare_inputs(inputs)
        with self.compute_loss_context_manager():
            loss = self._call_compute_loss(model, inputs, num_items_in_batch)
        if (not self.model_accepts_loss_kwargs or num_items_in_batch is None) and self.compute_loss_func is None:
            loss = loss / self.current_gradient_accumulation_steps
        self._run.strategy.backward(loss, self.scaler)  # DDP/FSDP: loss.backward(), DeepSpeed: its engine
        return loss.detach()

    def _call_compute_loss(self, model, inputs, num_items_in_batch):
        # An override written before num_items_in_batch existed must keep working.
        if self._compute_loss_takes_num_items():
            return self.compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)
        return self.compute_loss(model, inputs)

    def _compute_loss_takes_num_items(self) -> bool:
        cached = self.__dict__.get("_compute_loss_num_items")
        if cached is None:
            cached = accepts_argument(self.compute_loss, "num_items_in_batch")
            self.__dict__["_compute_loss_num_items"] = cached
        return cached

    def get_batch_samples(self, epoch_iterator, num_batches: int, device=None):
        """Fetch the micro-batches of one optimizer step and count their label tokens.

        The count (``num_items_in_batch``) is only taken when the model or ``compute_loss_func``
        uses it, because counting costs a reduction per batch."""
        args = self.args
        return fetch_batches(
            epoch_iterator, num_batches,
            count_items=self.model_accepts_loss_kwargs or self.compute_loss_func is not None,
            shifts_labels=self._signature.shifts_labels,
            across_ranks=args.average_tokens_across_devices and args.world_size > 1,
            device=device or args.device,
        )

    def floating_point_ops(self, inputs) -> int:
        """FLOPs of one forward and backward pass on ``inputs``: the model's own count when it has
        one (transformers models), else 6 x parameters x tokens (or examples)."""
        core = unwrap_model(self.model)
        counter = getattr(core, "floating_point_ops", None)
        if callable(counter):
            return counter(inputs)
        return estimate_training_flos(core, inputs)

    def store_flos(self) -> None:
        """Add the FLOPs counted since the last call, on every worker, to ``state.total_flos``."""
        run = self._run
        if run is None:
            return
        flos, run.flos = run.flos, 0.0
        if self.args.world_size > 1:
            flos = sum_over_ranks(torch.tensor(flos, dtype=torch.float64, device=run.device)).item()
        self.state.total_flos += flos

    # ------------------------------------------------------------------ logs, metrics, saving
    def log(self, logs: dict, start_time: Optional[float] = None) -> None:
        """Add ``epoch`` and ``step`` to ``logs``, append them to ``state.log_history`` and fire on_log."""
        if self.state.epoch is not None:
            logs["epoch"] = self.state.epoch
        if self.args.include_num_input_tokens_seen != "no":
            logs["num_input_tokens_seen"] = self.state.num_input_tokens_seen
            if start_time is not None:
                logs.update(speed_metrics("train", start_time, num_tokens=self.state.num_input_tokens_seen))
        self.state.log_history.append({**logs, "step": self.state.global_step})
        self.control = self.callback_handler.on_log(self.args, self.state, self.control, logs)

    def metrics_format(self, metrics: dict) -> dict:
        return metrics_io.metrics_format(metrics)

    def log_metrics(self, split: str, metrics: dict) -> None:
        metrics_io.log_metrics(split, metrics, self.is_world_process_zero())

    def save_metrics(self, split: str, metrics: dict, combined: bool = True) -> None:
        if self.is_world_process_zero():
            metrics_io.save_metrics(self.args.output_dir, split, metrics, combined)

    def save_state(self) -> None:
        if self.is_world_process_zero():
            os.makedirs(self.args.output_dir, exist_ok=True)
            self.state.save_to_json(os.path.join(self.args.output_dir, "trainer_state.json"))

    def save_model(self, output_dir: Optional[str] = None, _internal_call: bool = False) -> None:
        """Write the model (safetensors unless ``save_safetensors=False``), the processing class and
        ``training_args.json``/``.bin`` to ``output_dir``."""
        folder = output_dir or self.args.output_dir
        strategy = self._model_strategy  # a sharded model: every rank takes part in gathering its weights
        if self.final_model_dir is not None and strategy is None:
            if self.is_world_process_zero():  # trained sharded on workers: their consolidated weights
                _checkpoint.copy_model_folder(self, self.final_model_dir, folder)
        elif strategy is not None or self.is_world_process_zero():
            _checkpoint.save_model_folder(self, folder, strategy)
        if self.args.push_to_hub and not _internal_call:
            self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)

    def is_world_process_zero(self) -> bool:
        return self.args.process_index == 0

    def is_local_process_zero(self) -> bool:
        return self.args.local_process_index == 0

    # ------------------------------------------------------------------ callbacks
    def add_callback(self, callback: Union[type, TrainerCallback]) -> None:
        self.callback_handler.add_callback(callback)

    def pop_callback(self, callback: Union[type, TrainerCallback]):
        return self.callback_handler.pop_callback(callback)

    def remove_callback(self, callback: Union[type, TrainerCallback]) -> None:
        self.callback_handler.remove_callback(callback)

