"""The training loop, run on each Ray Train worker (or in-process in local mode).

Reads top to bottom: plan the run, set up model/optimizer/callbacks, then epochs of optimizer
steps, each made of one accumulation window of micro-batches. Host-device syncs happen only where
marked ``# sync``: on log steps, and when a NaN/Inf filter or a scalar learning rate needs a value.
"""

import math
import time

import torch

from .. import checkpoints as _checkpoint
from ..data.loaders import has_length, set_dataloader_epoch
from ..enums import SaveStrategy
from ..outputs import TrainOutput, speed_metrics
from ..overrides import OverrideCalls
from ..run_summary import log_training_summary
from ..schedules import steps_on_metric
from ..state import TrainerState
from .collectives import sum_over_ranks
from .model_setup import prepare_model_for_training
from .plan import accumulation_windows, plan_training
from .run_state import RunState, TrainRequest
from .tokens import input_token_count


def run_training(trainer, context, request: TrainRequest) -> TrainOutput:
    """One ``train()`` on this process, in the given execution context; retried with smaller
    batches after out-of-memory errors when ``auto_find_batch_size`` is set (accelerate's search:
    x0.9 per retry)."""

    def attempt(batch_size: int):
        trainer._reset_given_optimizers()  # a retry starts afresh: the schedule depends on the batch size
        return TrainingLoop(trainer, context, request, batch_size).run()

    start = trainer._train_batch_size  # HF's attribute: a batch size found earlier is tried first
    if trainer.args.auto_find_batch_size:
        from accelerate.utils import find_executable_batch_size

        output = find_executable_batch_size(attempt, starting_batch_size=start)()
    else:
        output = attempt(start)
    context.finish(trainer, output)
    return output


def fetch_batches(epoch_iterator, num_batches: int, *, count_items: bool, shifts_labels: bool,
                  across_ranks: bool, device):
    """Take up to ``num_batches`` micro-batches; with ``count_items``, also count the label tokens
    across them (``num_items_in_batch``: a token-level loss normalised over the whole window),
    summed over every rank when ``across_ranks``."""
    batches = []
    for _ in range(num_batches):
        try:
            batches.append(next(epoch_iterator))
        except StopIteration:
            break
    count = None
    if count_items and batches and isinstance(batches[0], dict) and "labels" in batches[0]:
        count = sum(_counted_labels(batch, shifts_labels).ne(-100).sum() for batch in batches)
        if across_ranks:
            count = sum_over_ranks(count.to(device))
        count = count.to(device)
    return batches, count


def _counted_labels(batch, shifts_labels: bool):
    """The label positions the loss predicts: a causal LM never predicts position 0 (a collator
    may also hand over ready ``shift_labels``)."""
    if "shift_labels" in batch:
        return batch["shift_labels"]
    return batch["labels"][..., 1:] if shifts_labels else batch["labels"]


class TrainingLoop:
    """One call of ``Trainer.train()`` on one worker, with one batch size. Mutable loop state lives
    in ``trainer.state`` and ``trainer.control``, the per-run objects in ``self.run`` (bound to the
    Trainer while training); the running loss sum is the only other accumulator."""

    def __init__(self, trainer, context, request: TrainRequest, train_batch_size: int):
        self.trainer = trainer
        self.args = trainer.args
        self.context = context
        self.resume_from_checkpoint = request.resume_from_checkpoint
        self.trial = request.trial
        self.ignore_keys_for_eval = request.ignore_keys_for_eval
        self.run_state = RunState.for_training(trainer.args, context, train_batch_size)
        self.tr_loss = None  # device tensor; summed every micro-step, read on log steps only
        self.total_loss_scalar = 0.0
        self.globalstep_last_logged = 0
        self.grad_norm = None
        self.learning_rate = None

    # ------------------------------------------------------------------ set-up
    def run(self) -> TrainOutput:
        extra_callbacks = self.context.loop_callbacks(self.trainer)
        for callback in extra_callbacks:
            self.trainer.add_callback(callback)
        try:
            with self.trainer._running(self.run_state):
                return self._train()
        finally:
            for callback in extra_callbacks:
                self.trainer.remove_callback(callback)

    def _train(self) -> TrainOutput:
        trainer, args = self.trainer, self.args
        trainer._memory_tracker.start("train")
        trainer.is_in_train = True
        dataloader = trainer.get_train_dataloader()
        batches_per_epoch = len(dataloader) if has_length(dataloader) else None
        plan = plan_training(
            batches_per_epoch=batches_per_epoch,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            max_steps=args.max_steps,
            num_train_epochs=args.num_train_epochs,
            total_train_batch_size=trainer.get_total_train_batch_size(args),
            dataset_size=trainer.num_examples(dataloader) if batches_per_epoch is not None else None,
        )
        trainer.state = self._fresh_state(plan)
        strategy = self.run_state.strategy
        model = prepare_model_for_training(trainer, self.run_state)
        model = strategy.create_optimizer_and_scheduler(trainer, model, plan.max_steps)
        epochs_trained, batches_to_skip = 0, 0
        if self.resume_from_checkpoint is not None:
            epochs_trained, batches_to_skip = _checkpoint.restore_training_state(
                trainer, self.resume_from_checkpoint, plan, strategy)
            self.globalstep_last_logged = trainer.state.global_step
        resume = None if self.resume_from_checkpoint is None else (
            self.resume_from_checkpoint, epochs_trained, batches_to_skip)
        log_training_summary(trainer, plan, dataloader, resume)
        handler = trainer.callback_handler
        handler.model, handler.optimizer, handler.lr_scheduler = trainer.model, trainer.optimizer, trainer.lr_scheduler
        handler.train_dataloader = dataloader
        trainer.state.is_local_process_zero = trainer.is_local_process_zero()
        trainer.state.is_world_process_zero = trainer.is_world_process_zero()
        start_time = time.time()
        trainer.control = handler.on_train_begin(args, trainer.state, trainer.control)
        if args.eval_on_start:
            self._evaluate(skip_scheduler=True)
        self.tr_loss = torch.zeros((), device=args.device)
        self._resolve_per_step_hooks(model)
        model.zero_grad()
        try:
            if trainer.state.global_step < plan.max_steps:  # resumed from its last checkpoint: nothing left
                self._run_epochs(model, dataloader, plan, epochs_trained, batches_to_skip, start_time)
        finally:
            self.run_state.release()
        return self._finish(plan, start_time)

    def _resolve_per_step_hooks(self, model):
        """Look up once what the per-step code would otherwise look up every step."""
        args = self.args
        self.calls = OverrideCalls(self.trainer)
        self.on_cpu = args.device.type == "cpu"
        self.no_sync = self.run_state.strategy.no_sync(model)
        self.scheduler_steps_per_step = not steps_on_metric(self.trainer.lr_scheduler)
        self.count_tokens = args.include_num_input_tokens_seen != "no" or args.include_tokens_per_second
        self.token_mode = args.include_num_input_tokens_seen
        self.pad_token_id = getattr(self.trainer.processing_class, "pad_token_id", None)

    def _fresh_state(self, plan) -> TrainerState:
        trainer = self.trainer
        state = TrainerState(
            max_steps=plan.max_steps,
            num_train_epochs=plan.num_train_epochs,
            train_batch_size=self.run_state.train_batch_size,
            is_hyper_param_search=self.trial is not None,
            trial_name=getattr(self.trial, "run_name", None),  # a search trial's name (its runs are named so)
            trial_params=getattr(self.trial, "params", None),
            stateful_callbacks=trainer.state.stateful_callbacks,
        )
        state.epoch = 0.0
        state.compute_steps(self.args, plan.max_steps)
        return state

    # ------------------------------------------------------------------ epochs and steps
    def _run_epochs(self, model, dataloader, plan, epochs_trained, batches_to_skip, start_time):
        trainer, args = self.trainer, self.args
        for epoch in range(epochs_trained, plan.num_train_epochs):
            set_dataloader_epoch(dataloader, epoch)
            steps_in_epoch = plan.batches_per_epoch or args.max_steps * args.gradient_accumulation_steps
            trainer.control = trainer.callback_handler.on_epoch_begin(args, trainer.state, trainer.control)
            iterator, skipped = _iterate_after(dataloader, batches_to_skip if epoch == epochs_trained else 0)
            step = skipped - 1
            for window in accumulation_windows(steps_in_epoch - skipped, args.gradient_accumulation_steps):
                batches, num_items = self.calls.get_batch_samples(iterator, window, self.run_state.device)
                if not batches:
                    break
                # the last window of an epoch may be short: its loss is the mean over what it has
                trainer.current_gradient_accumulation_steps = len(batches)
                for index, inputs in enumerate(batches):
                    step += 1
                    is_last_in_window = index == len(batches) - 1
                    if index == 0:
                        trainer.control = trainer.callback_handler.on_step_begin(args, trainer.state, trainer.control)
                    self._micro_step(model, inputs, num_items, sync_gradients=is_last_in_window)
                    if is_last_in_window:
                        self._optimizer_step(model)
                        trainer.state.epoch = epoch + (step + 1) / steps_in_epoch
                        trainer.control = trainer.callback_handler.on_step_end(args, trainer.state, trainer.control)
                        self._maybe_log_save_evaluate(model, start_time)
                    else:
                        trainer.control = trainer.callback_handler.on_substep_end(args, trainer.state, trainer.control)
                    if trainer.control.should_epoch_stop or trainer.control.should_training_stop:
                        break
                if trainer.control.should_epoch_stop or trainer.control.should_training_stop:
                    break
            if step < 0:  # the dataloader gave nothing: stop rather than loop over empty epochs
                trainer.control.should_training_stop = True
            trainer.control = trainer.callback_handler.on_epoch_end(args, trainer.state, trainer.control)
            self._maybe_log_save_evaluate(model, start_time)
            if trainer.control.should_training_stop:
                break

    def _micro_step(self, model, inputs, num_items, sync_gradients: bool):
        trainer, args = self.trainer, self.args
        if self.count_tokens:
            main_input = getattr(trainer.model, "main_input_name", "input_ids")
            trainer.state.num_input_tokens_seen += input_token_count(inputs, main_input, self.token_mode,
                                                                     self.pad_token_id)
        if self.no_sync is not None and not sync_gradients:
            with self.no_sync():  # reduce gradients once per window, on its last micro-batch
                loss = self.calls.training_step(model, inputs, num_items)
        else:
            loss = self.calls.training_step(model, inputs, num_items)
        if args.logging_nan_inf_filter:
            loss = self._finite_or_running_mean(loss)
        self.tr_loss.add_(loss)
        self.run_state.flos += float(trainer.floating_point_ops(inputs))

    def _finite_or_running_mean(self, loss):
        """A non-finite loss is logged as the running mean, so one bad batch does not poison the
        log. On CPU reading the value is free; on an accelerator torch.where avoids a sync."""
        state = self.trainer.state
        if self.on_cpu:
            if math.isfinite(loss.item()):
                return loss
            return self.tr_loss / (1 + state.global_step - self.globalstep_last_logged)
        running_mean = self.tr_loss / (1 + state.global_step - self.globalstep_last_logged)
        return torch.where(torch.isfinite(loss), loss, running_mean)

    def _optimizer_step(self, model):
        trainer, args = self.trainer, self.args
        scaler, strategy = self.run_state.scaler, self.run_state.strategy
        # HF v5 logs the gradient norm even without clipping (an infinite max norm only measures)
        clip_to = args.max_grad_norm if args.max_grad_norm and args.max_grad_norm > 0 else float("inf")
        self.grad_norm = strategy.clip_gradients(model, trainer.optimizer, clip_to, scaler)
        trainer.control = trainer.callback_handler.on_pre_optimizer_step(args, trainer.state, trainer.control)
        stepped = strategy.optimizer_step(trainer.optimizer, scaler)
        if self.grad_norm is None:  # DeepSpeed clips inside its step
            self.grad_norm = strategy.last_grad_norm()
        trainer.control = trainer.callback_handler.on_optimizer_step(args, trainer.state, trainer.control)
        self.learning_rate = trainer._get_learning_rate()  # the rate this step used (logged as in HF v5)
        if not stepped:
            self.run_state.skipped_steps += 1  # fp16 overflow: the schedule waits too (as in HF)
        elif self.scheduler_steps_per_step:
            trainer.lr_scheduler.step()
        strategy.zero_grad(model)
        trainer.state.global_step += 1
        if args.torch_empty_cache_steps and trainer.state.global_step % args.torch_empty_cache_steps == 0:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    # ------------------------------------------------------------------ log, evaluate, save
    def _maybe_log_save_evaluate(self, model, start_time):
        trainer, control, state = self.trainer, self.trainer.control, self.trainer.state
        if control.should_log and state.global_step > self.globalstep_last_logged:
            self._log_training_loss(start_time)
        if control.should_evaluate:
            metrics = self._evaluate()
            is_new_best = _checkpoint.update_best_metric(trainer, metrics)
            if self.args.save_strategy == SaveStrategy.BEST:
                trainer.control.should_save = is_new_best
        if trainer.control.should_save:
            folder = _checkpoint.save_checkpoint(trainer, model, self.run_state)
            trainer._push_from_checkpoint(folder)  # push_to_hub: a background upload, as hub_strategy says
            trainer.control = trainer.callback_handler.on_save(self.args, trainer.state, trainer.control,
                                                               checkpoint_folder=folder)

    def _log_training_loss(self, start_time):
        trainer, state = self.trainer, self.trainer.state
        loss_sum = self._gathered_mean(self.tr_loss).item()  # sync: log steps only
        self.tr_loss.zero_()
        logs = {"loss": loss_sum / (state.global_step - self.globalstep_last_logged)}
        if self.grad_norm is not None:
            logs["grad_norm"] = self.grad_norm.item() if torch.is_tensor(self.grad_norm) else self.grad_norm
        logs["learning_rate"] = self.learning_rate if self.learning_rate is not None else trainer._get_learning_rate()
        self.total_loss_scalar += loss_sum
        self.globalstep_last_logged = state.global_step
        trainer.store_flos()
        trainer.log(logs, start_time)

    def _gathered_mean(self, tensor):
        if self.args.world_size > 1 and torch.distributed.is_initialized():
            tensor = tensor.detach().clone()
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
            return tensor / self.args.world_size
        return tensor

    def _evaluate(self, skip_scheduler: bool = False) -> dict:
        trainer = self.trainer
        metrics = trainer.evaluate(ignore_keys=self.ignore_keys_for_eval)
        if self.trial is not None:
            trainer._report_to_hp_search(self.trial, trainer.state.global_step, metrics)
        if steps_on_metric(trainer.lr_scheduler) and not skip_scheduler:
            trainer.lr_scheduler.step(_checkpoint.read_metric(metrics, _checkpoint.best_metric_name(self.args)))
        return metrics

    # ------------------------------------------------------------------ the end
    def _finish(self, plan, start_time) -> TrainOutput:
        trainer, args, state = self.trainer, self.args, self.trainer.state
        if args.load_best_model_at_end and state.best_model_checkpoint is not None:
            _checkpoint.load_best_model(trainer, state.best_model_checkpoint, self.run_state.strategy)
        self.total_loss_scalar += self._gathered_mean(self.tr_loss).item()  # sync: once, at the end
        train_loss = self.total_loss_scalar / max(state.global_step, 0.001)
        tokens = state.num_input_tokens_seen if args.include_tokens_per_second else None
        metrics = speed_metrics("train", start_time, num_samples=plan.num_train_samples, num_steps=plan.max_steps,
                                num_tokens=tokens)
        trainer.store_flos()
        metrics["total_flos"] = state.total_flos
        metrics["train_loss"] = train_loss
        if self.run_state.scaler is not None:
            metrics["train_skipped_steps"] = self.run_state.skipped_steps
        trainer._memory_tracker.stop_and_update_metrics("train", metrics)
        trainer.is_in_train = False
        trainer.log(metrics)  # adds "epoch" to the returned metrics too, as HF does
        _checkpoint.finalize_checkpoints(args, state.best_model_checkpoint, self.run_state.sink.root)
        trainer.control = trainer.callback_handler.on_train_end(args, state, trainer.control)
        trainer._finish_current_push()  # push_to_hub: training ends when its uploads have
        return TrainOutput(state.global_step, train_loss, metrics)


def _iterate_after(dataloader, count: int):
    """An iterator over the epoch that starts after its first ``count`` batches (a resumed
    epoch), and how many batches were really skipped. A sampler that can skip does so without
    reading the batches (so a collator's randomness is not drawn twice); otherwise the batches
    are read and discarded."""
    sampler = getattr(dataloader, "sampler", None)
    if count and callable(getattr(sampler, "skip_batches", None)) and getattr(dataloader, "batch_size", None):
        count = min(count, sampler.num_batches())
        sampler.skip_batches(count)
        return iter(dataloader), count
    iterator, skipped = iter(dataloader), 0
    for _ in range(count):
        try:
            next(iterator)
        except StopIteration:
            break
        skipped += 1
    return iterator, skipped

