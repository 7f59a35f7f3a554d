"""The ``Trainer`` facade: HF's constructor and override points, each a short delegation.

The loop itself lives in ``raytrainer.loop``; where it runs (in this process, or on Ray workers) is
decided by ``raytrainer.runtime``. Every method here that a user may override keeps HF's signature,
and the loop calls it through the Trainer, so a subclass's version is the one that runs.
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
from . import optim as _optim
from . import schedules
from .args import TrainingArguments
from .callbacks import TrainerCallback, default_callback_handler
from .compat.trainer_v4 import V4TrainerNames, processing_class_from, resume_from_v4_train_kwargs
from .data import stream_shards, streaming
from .data.collators import default_collator_for
from .data.columns import RemoveColumnsCollator, remove_unused_hf_columns, signature_columns
from .data.loaders import build_eval_dataloader, build_train_dataloader
from .hub import HubMethods
from .integrations import added_callbacks
from .logging_setup import apply_log_level
from .loop.collectives import sum_over_ranks
from .loop.evaluation import run_evaluation_loop, run_prediction_step
from .loop.losses import loss_from_outputs
from .loop.run_state import RunState, TrainRequest
from .loop.training import fetch_batches
from .memory_metrics import MemoryTracker
from .model_settings import apply_model_settings, build_label_smoother
from .modeling import count_parameters, estimate_training_flos, inspect_model, unwrap_model
from .nested import move_to_device
from .outputs import PredictionOutput, speed_metrics
from .overrides import accepts_argument
from .probe import probe_model
from .runtime.ray_session import quiet_ray
from .seeding import enable_full_determinism, set_seed
from .state import TrainerControl, TrainerState
from .validation import check_output_locations, rebuilt_on_worker, validate_trainer_inputs

logger = logging.getLogger("raytrainer")


class Trainer(V4TrainerNames, HubMethods):
    """A training and evaluation loop for PyTorch models with the HF ``Trainer`` API, run by Ray Train.

    Arguments are those of ``transformers.Trainer`` plus Ray's own configuration objects:

    - ``scaling_config`` (``ray.train.ScalingConfig``): how many Ray Train workers run the loop.
      ``ScalingConfig(num_workers=0)`` (the default) runs it in this process (Ray Train local mode),
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
        if args is None:
            args = TrainingArguments(output_dir="tmp_trainer")
        self.args = args
        self._memory_tracker = MemoryTracker(args.skip_memory_metrics)
        self._memory_tracker.start("init")
        apply_log_level(args)  # "passive" keeps the level the user set
        self.model_init = model_init
        self.hp_name = None
        # after a sharded train() on Ray workers: the folder of the consolidated trained weights (the
        # driver's self.model keeps the weights it was given; evaluate/predict/save_model use this)
        self.final_model_dir = None
        self.hp_search_backend = None
        self.is_in_train = False
        if args.full_determinism:
            enable_full_determinism(args.seed)
        else:
            set_seed(args.seed)
        if model is None and model_init is not None:
            model = self.call_model_init()
        self.model = model
        self.model_wrapped = model
        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self.processing_class = processing_class = processing_class_from(processing_class, tokenizer)
        self.data_collator = data_collator if data_collator is not None else default_collator_for(processing_class)
        self.compute_loss_func = compute_loss_func
        self.compute_metrics = compute_metrics
        self.preprocess_logits_for_metrics = preprocess_logits_for_metrics
        self.optimizer, self.lr_scheduler = optimizers
        self._given_optimizers = optimizers
        self.optimizer_cls_and_kwargs = optimizer_cls_and_kwargs
        self.scaling_config = scaling_config
        self.run_config = run_config
        checked_on_driver = rebuilt_on_worker()
        if not checked_on_driver:
            validate_trainer_inputs(self, optimizers=optimizers, callbacks=callbacks)

        self._signature = inspect_model(model)
        self.model_accepts_loss_kwargs = self._signature.accepts_loss_kwargs
        self.can_return_loss = self._signature.can_return_loss
        self.label_names = list(args.label_names) if args.label_names is not None else list(self._signature.label_names)
        self.label_smoother = build_label_smoother(args, model)
        self.is_model_parallel = False
        self.place_model_on_device = args.place_model_on_device
        self.neftune_noise_alpha = args.neftune_noise_alpha
        self._run = None  # the RunState of the training or evaluation under way (see _running)
        self._model_strategy = None  # the parallel strategy that sharded self.model, if one did
        self._train_batch_size = args.train_batch_size  # reduced by auto_find_batch_size on OOM
        self.current_gradient_accumulation_steps = args.gradient_accumulation_steps

        self.state = TrainerState(
            is_local_process_zero=self.is_local_process_zero(),
            is_world_process_zero=self.is_world_process_zero(),
        )
        self.control = TrainerControl()
        # report_to's integrations come before the user's callbacks, as in HF (a missing library fails here)
        self.callback_handler = default_callback_handler(args, added_callbacks(self, callbacks) + list(callbacks or []),
                                                         self.model, processing_class, self.optimizer,
                                                         self.lr_scheduler)
        if args.push_to_hub:
            self.init_hf_repo()  # an unreachable Hub or a refused token fails here, before training
        if not checked_on_driver:
            uses_num_items = probe_model(self, overrides_compute_loss=type(self).compute_loss is not Trainer.compute_loss)
            if uses_num_items is not None:
                self.model_accepts_loss_kwargs = uses_num_items
        apply_model_settings(model, args)
        self.control = self.callback_handler.on_init_end(self.args, self.state, self.control)
        self._memory_tracker.stop_and_update_metrics("init")

    # ------------------------------------------------------------------ model_init and train
    def call_model_init(self, trial=None) -> nn.Module:
        """Build a fresh model with ``model_init``, passing the trial when it takes one argument."""
        import inspect

        params = list(inspect.signature(self.model_init).parameters.values())
        required = [p for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if len(required) > 1:
            raise ValueError("model_init must take no argument or a single argument (the trial).")
        # a single parameter is the trial; a class with several defaulted parameters gets none
        takes_trial = len(required) == 1 or (len(params) == 1 and params[0].kind != params[0].VAR_KEYWORD)
        model = self.model_init(trial) if takes_trial else self.model_init()
        if model is None:
            raise ValueError("model_init returned None; it must return an nn.Module.")
        return model

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
            if self.args.full_determinism:
                enable_full_determinism(self.args.seed)
            else:
                set_seed(self.args.seed)
            self.model = self.model_wrapped = self.call_model_init(_user_trial(trial))
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

    def _dataset_shard(self, name: str):
        """The current run's Ray Train dataset shard called ``name``, or None."""
        context = self._run.context if self._run is not None else None
        return context.dataset_shard(name) if context is not None else None

    def _reset_given_optimizers(self) -> None:
        """Back to the optimizer and scheduler passed to the constructor (None: build new ones)."""
        self.optimizer, self.lr_scheduler = self._given_optimizers

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

    # ------------------------------------------------------------------ data
    def _remove_unused_columns(self, dataset, description: str):
        if not self.args.remove_unused_columns:
            return dataset
        columns = signature_columns(self.model, self.label_names)
        if columns is None:
            return dataset
        return remove_unused_hf_columns(dataset, columns, description)

    def _collator_for(self, dataset, description: str):
        collator = self.data_collator
        if self.args.remove_unused_columns and not hasattr(dataset, "column_names"):
            columns = signature_columns(self.model, self.label_names)
            if columns is not None and not _first_example_fits(dataset, columns):
                collator = RemoveColumnsCollator(collator, columns, description=description)
        return collator

    def _loader_options(self) -> dict:
        return dict(
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory and self.args.device.type == "cuda",
            persistent_workers=self.args.dataloader_persistent_workers,
            prefetch_factor=self.args.dataloader_prefetch_factor,
            multiprocessing_context=self.args.dataloader_multiprocessing_context,
            in_order=self.args.dataloader_in_order,
        )

    def get_train_dataloader(self) -> torch.utils.data.DataLoader:
        """The training dataloader: a seeded per-epoch shuffle, sharded across Ray workers."""
        if self.train_dataset is None:
            raise ValueError("Trainer: training requires a train_dataset.")
        if streaming.is_stream(self.train_dataset):  # Ray Data: this rank's shard (data/stream_shards.py)
            return stream_shards.train_batches(self, self.train_dataset, self._train_batch_size, self._dataset_shard)
        lengths = None
        original = self.train_dataset
        if (self.args.group_by_length and hasattr(original, "column_names")
                and self.args.length_column_name in original.column_names):
            lengths = list(original[self.args.length_column_name])  # read before unused columns go
        dataset = self._remove_unused_columns(original, "training")
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return build_train_dataloader(
            dataset, self._collator_for(dataset, "training"), self._train_batch_size,
            seed=seed, world_size=self.args.world_size, rank=self.args.process_index,
            drop_last=self.args.dataloader_drop_last, group_by_length=self.args.group_by_length,
            lengths=lengths, shuffle=self.args.train_sampling_strategy != "sequential", **self._loader_options(),
        )

    def _eval_loader(self, dataset, description: str):
        if streaming.is_stream(dataset):
            return stream_shards.eval_batches(self, dataset, description, self._dataset_shard)
        dataset = self._remove_unused_columns(dataset, description)
        return build_eval_dataloader(
            dataset, self._collator_for(dataset, description), self.args.eval_batch_size,
            world_size=self.args.world_size, rank=self.args.process_index, **self._loader_options(),
        )

    def get_eval_dataloader(self, eval_dataset=None) -> torch.utils.data.DataLoader:
        """The evaluation dataloader: sequential, every example exactly once across workers."""
        if eval_dataset is None and self.eval_dataset is None:
            raise ValueError("Trainer: evaluation requires an eval_dataset.")
        if isinstance(eval_dataset, str):
            eval_dataset = self.eval_dataset[eval_dataset]
        return self._eval_loader(eval_dataset if eval_dataset is not None else self.eval_dataset, "evaluation")

    def get_test_dataloader(self, test_dataset) -> torch.utils.data.DataLoader:
        return self._eval_loader(test_dataset, "test")

    def num_examples(self, dataloader) -> int:
        """Examples in a dataloader's dataset, or batches x batch size when it has no length."""
        try:
            return len(dataloader.dataset)
        except (NameError, AttributeError, TypeError):
            return len(dataloader) * self._train_batch_size

    def get_total_train_batch_size(self, args) -> int:
        return self._train_batch_size * args.gradient_accumulation_steps * args.world_size

    # ------------------------------------------------------------------ optimizer and scheduler
    def create_optimizer(self):
        if self.optimizer is None:
            self.optimizer = _optim.create_optimizer(
                self.model, self.args,
                optimizer_cls_and_kwargs=self.optimizer_cls_and_kwargs or self.get_optimizer_cls_and_kwargs(self.args, self.model),
                decay_parameter_names=self.get_decay_parameter_names(self.model),
            )
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            self.lr_scheduler = schedules.get_scheduler(
                self.args.lr_scheduler_type,
                optimizer=optimizer if optimizer is not None else self.optimizer,
                num_warmup_steps=self.args.get_warmup_steps(num_training_steps),
                num_training_steps=num_training_steps,
                scheduler_specific_kwargs=self.args.lr_scheduler_kwargs,
            )
        return self.lr_scheduler

    def create_optimizer_and_scheduler(self, num_training_steps: int):
        self.create_optimizer()
        self.create_scheduler(num_training_steps=num_training_steps, optimizer=self.optimizer)

    def get_decay_parameter_names(self, model) -> list:
        return _optim.get_decay_parameter_names(model)

    @staticmethod
    def get_optimizer_cls_and_kwargs(args, model=None):
        return _optim.get_optimizer_cls_and_kwargs(args, model)

    def get_learning_rates(self) -> list:
        if self.lr_scheduler is None:
            raise ValueError("Trainer: the scheduler is not created yet; call create_optimizer_and_scheduler first.")
        return [group["lr"] for group in self.optimizer.param_groups]

    def get_optimizer_group(self, param=None):
        if self.optimizer is None:
            raise ValueError("Trainer: the optimizer is not created yet; call create_optimizer first.")
        if param is None:
            return [group["params"] for group in self.optimizer.param_groups]
        for group in self.optimizer.param_groups:
            if any(p is param for p in group["params"]):
                return group
        return None

    def get_num_trainable_parameters(self) -> int:
        return count_parameters(self.model, trainable_only=True)

    def _get_learning_rate(self) -> float:
        """The current learning rate: the scheduler's last one, or the optimizer's for a scheduler
        stepped on a metric; before the scheduler exists, the optimizer's (or ``args``') rate."""
        if self.lr_scheduler is None or schedules.steps_on_metric(self.lr_scheduler):
            return self.optimizer.param_groups[0]["lr"] if self.optimizer is not None else self.args.learning_rate
        rate = self.lr_scheduler.get_last_lr()[0]
        return rate.item() if torch.is_tensor(rate) else rate

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

    # ------------------------------------------------------------------ evaluation and prediction
    def evaluate(self, eval_dataset=None, ignore_keys: Optional[list] = None, metric_key_prefix: str = "eval") -> dict:
        """Evaluate on ``eval_dataset`` (or the Trainer's); a dict of datasets is evaluated one by one
        with the key added to the metric names (``eval_<key>_loss``)."""
        import time

        if self._evaluates_on_workers():
            from .runtime.remote_eval import evaluate_on_workers

            return evaluate_on_workers(self, "evaluate", dict(eval_dataset=eval_dataset, ignore_keys=ignore_keys,
                                                              metric_key_prefix=metric_key_prefix))
        datasets = eval_dataset if eval_dataset is not None else self.eval_dataset
        if isinstance(datasets, dict):
            metrics = {}
            for name, dataset in datasets.items():
                metrics.update(self.evaluate(dataset if eval_dataset is not None else name, ignore_keys,
                                             f"{metric_key_prefix}_{name}"))
            return metrics
        if not self.is_in_train:  # inside train() the memory counts toward the train stage
            self._memory_tracker.start("eval")
        dataloader = self.get_eval_dataloader(eval_dataset)
        start = time.time()
        output = self.evaluation_loop(
            dataloader, description="Evaluation",
            prediction_loss_only=True if self.compute_metrics is None else None,
            ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix,
        )
        output.metrics.update(self._eval_speed(metric_key_prefix, start, output.num_samples))
        self._memory_tracker.stop_and_update_metrics("eval", output.metrics)
        self.log(output.metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics=output.metrics)
        return output.metrics

    def predict(self, test_dataset, ignore_keys: Optional[list] = None, metric_key_prefix: str = "test") -> PredictionOutput:
        """Predictions (and metrics, when labels are present) on ``test_dataset``."""
        import time

        if self._evaluates_on_workers():
            from .runtime.remote_eval import evaluate_on_workers

            return evaluate_on_workers(self, "predict", dict(test_dataset=test_dataset, ignore_keys=ignore_keys,
                                                             metric_key_prefix=metric_key_prefix))
        if not self.is_in_train:
            self._memory_tracker.start("test")
        dataloader = self.get_test_dataloader(test_dataset)
        start = time.time()
        output = self.evaluation_loop(dataloader, description="Prediction", ignore_keys=ignore_keys,
                                      metric_key_prefix=metric_key_prefix)
        output.metrics.update(self._eval_speed(metric_key_prefix, start, output.num_samples))
        self._memory_tracker.stop_and_update_metrics("test", output.metrics)
        self.control = self.callback_handler.on_predict(self.args, self.state, self.control, metrics=output.metrics)
        return PredictionOutput(predictions=output.predictions, label_ids=output.label_ids, metrics=output.metrics)

    def _evaluates_on_workers(self) -> bool:
        """Evaluation runs where the model lives: on Ray Train workers for a multi-worker
        ScalingConfig (the workers' own rebuilt Trainer, and evaluations during training, run here)."""
        from .runtime.scaling import is_local_mode

        return not self.is_in_train and self._run is None and not is_local_mode(self.scaling_config)

    def _eval_speed(self, prefix: str, start: float, num_samples: int) -> dict:
        import math

        total_batch = self.args.eval_batch_size * self.args.world_size
        return speed_metrics(prefix, start, num_samples=num_samples, num_steps=math.ceil(num_samples / total_batch))

    def evaluation_loop(self, dataloader, description: str, prediction_loss_only: Optional[bool] = None,
                        ignore_keys: Optional[list] = None, metric_key_prefix: str = "eval"):
        with quiet_ray(self.args):  # a Ray Data stream read here would print Ray's lines
            return run_evaluation_loop(self, self._evaluation_run(), dataloader, description, prediction_loss_only,
                                       ignore_keys, metric_key_prefix)

    def prediction_step(self, model, inputs, prediction_loss_only: bool, ignore_keys: Optional[list] = None):
        """``(loss, logits, labels)`` of one evaluation batch, without gradients."""
        return run_prediction_step(self, model, inputs, prediction_loss_only, ignore_keys)

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


def _user_trial(trial):
    """What ``model_init`` receives: the Optuna trial or Tune config behind a search's trial."""
    from .hpo.trial import SearchTrial

    return trial.user_trial if isinstance(trial, SearchTrial) else trial


def _first_example_fits(dataset, columns) -> bool:
    """True when a map-style dataset's first example has only columns the model takes: then no
    pruning wrapper is needed (it would cost a dict rebuild per example per step). Datasets whose
    examples change keys along the way should set their keys consistently or prune themselves."""
    try:
        example = dataset[0]
    except Exception:  # noqa: BLE001 - iterable or unsized datasets: keep the per-example pruning
        return False
    return isinstance(example, Mapping) and set(example) <= set(columns)
