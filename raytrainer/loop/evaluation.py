"""The evaluation/prediction loop and the default ``prediction_step``."""

from collections.abc import Mapping

import numpy as np
import torch

from ..outputs import EvalLoopOutput, EvalPrediction, denumpify_detensorize
from ..modeling import unwrap_model
from ..overrides import OverrideCalls
from ..run_summary import log_evaluation_summary
from .collectives import broadcast_from_rank_zero, gather_objects, is_distributed, merge_rank_outputs
from ..nested import EvalLoopContainer, find_batch_size, nested_detach


def run_prediction_step(trainer, model, inputs, prediction_loss_only: bool, ignore_keys=None):
    """``(loss, logits, labels)`` for one batch. The loss is computed when every label is present
    (or the model can return a loss without labels); logits are every output but the loss and
    ``ignore_keys``."""
    label_names = trainer.label_names
    has_labels = bool(label_names) and all(inputs.get(name) is not None for name in label_names)
    return_loss = inputs.get("return_loss")
    if return_loss is None:
        return_loss = trainer.can_return_loss
    loss_without_labels = not label_names and bool(return_loss)
    inputs = trainer._prepare_inputs(inputs)
    if ignore_keys is None:
        config = getattr(unwrap_model(model), "config", None)
        ignore_keys = list(getattr(config, "keys_to_ignore_at_inference", []) or [])
    labels = None
    if has_labels or loss_without_labels:
        labels = nested_detach(tuple(inputs.get(name) for name in label_names))
        labels = labels[0] if len(labels) == 1 else labels
    with torch.no_grad():
        if has_labels or loss_without_labels:
            with trainer.compute_loss_context_manager():
                loss, outputs = trainer.compute_loss(model, inputs, return_outputs=True)
            loss = loss.detach().mean()
            logits = _logits_of(outputs, ignore_keys + ["loss"], skip_first=True)
        else:
            loss = None
            with trainer.compute_loss_context_manager():
                outputs = model(**inputs)
            logits = _logits_of(outputs, ignore_keys, skip_first=False)
            if trainer.args.past_index >= 0:
                trainer._remember_past(outputs[trainer.args.past_index - 1])
    if prediction_loss_only:
        return loss, None, None
    logits = nested_detach(logits)
    if isinstance(logits, (tuple, list)) and len(logits) == 1:
        logits = logits[0]
    return loss, logits, labels


def _logits_of(outputs, ignore_keys, skip_first: bool):
    if isinstance(outputs, Mapping):
        return tuple(v for k, v in outputs.items() if k not in ignore_keys)
    if isinstance(outputs, (tuple, list)):
        return tuple(outputs[1:] if skip_first else outputs)
    return outputs


def run_evaluation_loop(trainer, run, dataloader, description, prediction_loss_only, ignore_keys, prefix):
    """The evaluation loop with ``run`` bound to the Trainer: the training run's state during
    training, a fresh evaluation state otherwise (evaluation precision, its own ``past``)."""
    args = trainer.args
    if prediction_loss_only is None:
        prediction_loss_only = args.prediction_loss_only
    # never the DDP wrapper: ranks may see different numbers of eval batches, and a DDP forward
    # can start collectives (buffer broadcasts) that would then wait forever
    model = _without_ddp(trainer.model_wrapped) if trainer.is_in_train else trainer.model
    if not trainer.is_in_train and not run.strategy.shards_model:  # a sharded model sits where it was sharded
        model.to(args.device)
    log_evaluation_summary(trainer, dataloader, description)
    model.eval()
    trainer.callback_handler.eval_dataloader = dataloader
    past_before, run.past = run.past, None
    try:
        with trainer._running(run):
            arrays, observed, metrics = _evaluate_batches(trainer, run, model, dataloader, prediction_loss_only,
                                                          ignore_keys)
    finally:
        run.past = past_before
        if trainer.is_in_train:
            # training_step only calls .train() on a model not in training mode; the evaluation put
            # the inner module (not a DDP/compile wrapper) in eval mode, so restore it here
            trainer.model_wrapped.train()
    return _gathered_output(trainer, arrays, _count_samples(dataloader, observed), metrics, prefix)


def _evaluate_batches(trainer, run, model, dataloader, prediction_loss_only, ignore_keys):
    """Every batch through ``prediction_step``; returns ``(arrays, examples seen, metrics)``
    (metrics only under ``batch_eval_metrics``)."""
    args = trainer.args
    batch_size = dataloader.batch_size
    concat, pad = args.eval_do_concat_batches, -100
    losses, preds, labels_store, inputs_store = (EvalLoopContainer(concat, pad) for _ in range(4))
    wants_inputs = "inputs" in (args.include_for_metrics or [])
    wants_losses = "loss" in (args.include_for_metrics or [])
    metrics, observed = None, 0
    main_input = getattr(unwrap_model(model), "main_input_name", "input_ids")  # looked up once
    calls = OverrideCalls(trainer)
    # a sharded model's forward is a collective: the strategy keeps every rank's passes in step (a
    # copy of the inputs: the loss computation may pop the labels)
    batches = run.strategy.eval_batches(_with_last_flag(dataloader),
                                        lambda item: calls.prediction_step(model, dict(item[0]), True))
    for step, (inputs, is_last) in enumerate(batches):  # a stream has no length
        observed_batch = find_batch_size(inputs)
        if observed_batch is not None:
            observed += observed_batch
            batch_size = batch_size or observed_batch
        loss, logits, labels = calls.prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        batch_inputs = inputs.get(main_input) if wants_inputs and isinstance(inputs, Mapping) else None
        if loss is not None:
            losses.add(loss.repeat(observed_batch or batch_size or 1))
        if batch_inputs is not None:
            inputs_store.add(batch_inputs)
        if logits is not None and trainer.preprocess_logits_for_metrics is not None:
            logits = trainer.preprocess_logits_for_metrics(logits, labels)
        if logits is not None:
            preds.add(logits)
        if labels is not None:
            labels_store.add(labels)
        trainer.control = trainer.callback_handler.on_prediction_step(args, trainer.state, trainer.control)
        if args.batch_eval_metrics:
            if trainer.compute_metrics is not None and logits is not None and labels is not None:
                metrics = trainer.compute_metrics(
                    EvalPrediction(logits, labels, inputs=inputs if wants_inputs else None,
                                   losses=loss if wants_losses else None),
                    compute_result=is_last,
                )
            for store in (preds, labels_store, inputs_store):
                store.clear()  # keep nothing: the metric function accumulated it
        elif args.eval_accumulation_steps is not None and (step + 1) % args.eval_accumulation_steps == 0:
            for store in (losses, preds, labels_store, inputs_store):
                store.to_cpu_and_numpy()
    arrays = tuple(s.get_arrays() for s in (losses, preds, labels_store, inputs_store))
    return arrays, observed, metrics


def _gathered_output(trainer, arrays, num_samples, metrics, prefix):
    """Join every rank's outputs (dataset order), compute the metrics once on rank 0 unless
    ``batch_eval_metrics`` already did, add the mean loss and the metric-name prefix."""
    args = trainer.args
    if is_distributed(args):
        gathered = gather_objects((arrays, num_samples), args)
        arrays = tuple(merge_rank_outputs([part[0][i] for part in gathered]) for i in range(4))
        num_samples = sum(part[1] for part in gathered)
    all_losses, all_preds, all_labels, all_inputs = arrays
    include = args.include_for_metrics or []
    if trainer.compute_metrics is not None and all_preds is not None and all_labels is not None and not args.batch_eval_metrics:
        if trainer.is_world_process_zero():  # computed once; every rank then gets rank 0's result
            metrics = trainer.compute_metrics(EvalPrediction(
                all_preds, all_labels,
                inputs=all_inputs if "inputs" in include else None,
                losses=all_losses if "loss" in include else None,
            ))
        metrics = broadcast_from_rank_zero(metrics, args)
    metrics = denumpify_detensorize(dict(metrics or {}))
    if isinstance(all_losses, list) and all_losses:
        metrics[f"{prefix}_loss"] = np.concatenate(all_losses).mean().item()
    elif isinstance(all_losses, np.ndarray):
        metrics[f"{prefix}_loss"] = all_losses.mean().item()
    for key in list(metrics):
        if not key.startswith(f"{prefix}_"):
            metrics[f"{prefix}_{key}"] = metrics.pop(key)
    return EvalLoopOutput(predictions=all_preds, label_ids=all_labels, metrics=metrics, num_samples=num_samples)


def _with_last_flag(batches):
    """``(batch, is_last)`` pairs, reading one batch ahead: a stream without a length still tells
    ``batch_eval_metrics`` which batch is its last."""
    iterator = iter(batches)
    try:
        current = next(iterator)
    except StopIteration:
        return
    for following in iterator:
        yield current, False
        current = following
    yield current, True


def _without_ddp(model):
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def _count_samples(dataloader, observed: int) -> int:
    dataset = getattr(dataloader, "dataset", None)
    try:
        count = len(dataset)
    except TypeError:
        count = 0
    if count == 0 and observed > 0:
        return observed
    return count
