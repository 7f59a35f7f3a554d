"""The functions Ray Train runs: in this process (local mode) or on every Ray Train worker."""

import dataclasses

import ray

from ..callbacks.jit_checkpoint import jit_checkpointing
from ..loop.training import run_training
from .context import LocalContext, WorkerContext
from .ray_session import quiet_train_worker, ray_logs_wanted

# The driver shows progress; a worker's own display would print every bar twice.
_DISPLAY_CALLBACKS = ("ProgressCallback", "PrinterCallback", "NotebookProgressCallback")


def local_train_loop(config: dict) -> None:
    """Local mode: the job holds the user's own Trainer object."""
    job = config["job"]
    with jit_checkpointing(job.trainer):  # SIGTERM -> checkpoint and stop, when enable_jit_checkpoint
        job.result["output"] = run_training(job.trainer, LocalContext(job.checkpoint_root), job.request)


def remote_train_loop(config: dict) -> None:
    """A Ray Train worker: rebuild the Trainer from its blueprint, train, send the result home."""
    if not ray_logs_wanted():
        quiet_train_worker()  # Ray's per-report INFO lines would reach the driver as prefixed lines
    job = config["job"]
    context = WorkerContext(job)
    trainer = _build_trainer(job)
    with context.resume_point(job.request.resume_from_checkpoint) as resume_from_checkpoint:
        run_training(trainer, context, dataclasses.replace(job.request, resume_from_checkpoint=resume_from_checkpoint))


def remote_eval_loop(config: dict) -> None:
    """A Ray Train worker of ``evaluate()``/``predict()``: rebuild the Trainer, prepare its model as
    training did, run the call on this worker's share of the data, send rank 0's result home."""
    import dataclasses as _dataclasses

    from ..loop.run_state import RunState
    from ..parallel import choose_strategy
    from ..state import TrainerState
    from .channel import LogStreamCallback

    if not ray_logs_wanted():
        quiet_train_worker()
    from ..integrations.base import ReportingCallback

    job = config["job"]
    context = WorkerContext(job)
    trainer = _build_trainer(job)
    for callback in [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, ReportingCallback)]:
        trainer.callback_handler.remove_callback(callback)  # the driver's own ones log the result (remote_eval)
    trainer.state = TrainerState(**job.state)
    strategy = choose_strategy(trainer.args)
    run = RunState.for_evaluation(trainer.args, trainer.args.train_batch_size, strategy, context=context)
    if strategy.shards_model:  # shard as training did, then the trained weights of final_model_dir
        strategy.prepare_for_evaluation(trainer)
        if job.weights is not None:
            strategy.load_weights(trainer, job.weights)
    if context.rank == 0:
        trainer.add_callback(LogStreamCallback(job.channel))
    with trainer._running(run):
        output = getattr(trainer, job.method)(**ray.get(job.kwargs_ref))
    context.send_home({"output": output, "state": _dataclasses.asdict(trainer.state)})


def _build_trainer(job):
    trainer = _load_blueprint(job.blueprint_ref).build()
    for callback in [cb for cb in trainer.callback_handler.callbacks if type(cb).__name__ in _DISPLAY_CALLBACKS]:
        trainer.callback_handler.remove_callback(callback)
    return trainer


def _load_blueprint(ref):
    try:
        return ray.get(ref)
    except ray.exceptions.RaySystemError as error:
        raise RuntimeError(
            f"The Trainer and its arguments could not be rebuilt on this Ray worker ({error}). The modules "
            "that define your model, dataset and Trainer classes must be importable on every worker: install "
            "them there, or ship them with ray.init(runtime_env={'working_dir': ...} or {'py_modules': [...]})."
        ) from None
