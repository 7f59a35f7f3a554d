"""What a training run says at ``log_level="info"`` before its first step: HF's ``***** Running
training *****`` block, and, on resume, where it resumes and which step intervals or batch size
differ from the checkpoint's."""

import logging

from .data.loaders import has_length

logger = logging.getLogger("raytrainer")

# TrainerState fields that the arguments set; a resumed run that changed them behaves differently
# from the run it continues (its saves and logs fall on other steps).
_STATE_FIELDS_FROM_ARGS = ("logging_steps", "eval_steps", "save_steps", "train_batch_size")
_ARGUMENT_NAMES = {"train_batch_size": "per_device_train_batch_size"}


def log_training_summary(trainer, plan, dataloader, resume=None) -> None:
    """``resume``: ``(checkpoint folder, epochs already trained, batches to skip)`` or None."""
    if not logger.isEnabledFor(logging.INFO):
        return  # counting parameters walks the model
    args = trainer.args
    sized = has_length(dataloader)
    num_examples = trainer.num_examples(dataloader) if sized else plan.total_train_batch_size * plan.max_steps
    lines = ["***** Running training *****", f"  Num examples = {num_examples:,}"]
    if sized:
        lines += [f"  Num Epochs = {plan.num_train_epochs:,}",
                  f"  Num update steps per epoch = {plan.num_update_steps_per_epoch:,}"]
    else:
        lines.append("  Num Epochs = unknown (the dataset has no length; max_steps ends the run)")
    lines.append(f"  Instantaneous batch size per device = {args.per_device_train_batch_size:,}")
    if trainer._train_batch_size != args.per_device_train_batch_size:
        lines.append(f"  Batch size found by auto_find_batch_size = {trainer._train_batch_size:,}")
    lines += [
        f"  Total train batch size (w. parallel, distributed & accumulation) = {plan.total_train_batch_size:,}",
        f"  Gradient Accumulation steps = {args.gradient_accumulation_steps}",
        f"  Total optimization steps = {plan.max_steps:,}",
        f"  Number of trainable parameters = {trainer.get_num_trainable_parameters():,}",
    ]
    if resume is not None:
        folder, epochs_trained, batches_to_skip = resume
        lines.append(f"  Resuming training from {folder} with epoch {epochs_trained} and global step "
                     f"{trainer.state.global_step}")
        if not args.ignore_data_skip:
            lines.append(f"  Fast-forwarding the dataloader past {epochs_trained} epochs and {batches_to_skip} "
                         "batches to resume from the exact training state.")
    for line in lines:
        logger.info(line)


def log_evaluation_summary(trainer, dataloader, description: str) -> None:
    """HF's ``***** Running Evaluation *****`` (or ``Prediction``) block."""
    if not logger.isEnabledFor(logging.INFO):
        return
    count = f"{trainer.num_examples(dataloader):,}" if has_length(dataloader) else "unknown (a stream)"
    for line in (f"***** Running {description} *****", f"  Num examples = {count}",
                 f"  Batch size = {trainer.args.eval_batch_size}"):
        logger.info(line)


def warn_if_arguments_differ(current_state, saved_state, folder: str) -> None:
    """Compare this run's step intervals and batch size (as resolved in ``current_state``) with the
    checkpoint's ``trainer_state.json``; a warning lists every difference."""
    differences = []
    for field in _STATE_FIELDS_FROM_ARGS:
        ours, theirs = getattr(current_state, field), getattr(saved_state, field)
        if ours is not None and theirs is not None and ours != theirs:
            name = _ARGUMENT_NAMES.get(field, field)
            differences.append(f"{name}: {ours} (this run) != {theirs} (checkpoint)")
    if differences:
        logger.warning("The arguments of this run differ from those in %s/trainer_state.json:\n  %s",
                       folder, "\n  ".join(differences))
