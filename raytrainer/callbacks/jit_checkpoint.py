"""``enable_jit_checkpoint``: on SIGTERM, save a checkpoint at the end of the current step and stop.

This is the in-process (local mode) half. Ray Train workers always react to SIGTERM and to Ray's
preemption notices (``raytrainer.runtime.preemption``), whatever this flag says, because Ray's
restart-from-checkpoint relies on it. Here, a script killed by its scheduler (Slurm, Kubernetes,
a notebook's stop button) leaves a checkpoint that ``train(resume_from_checkpoint=True)`` resumes,
and ``train()`` returns normally, as in HF.
"""

import contextlib
import logging
import signal
import threading

from raytrainer.callbacks.base import TrainerCallback

logger = logging.getLogger("raytrainer")


class JITCheckpointCallback(TrainerCallback):
    """Raises ``should_save`` and ``should_training_stop`` at the first step end after SIGTERM."""

    def __init__(self):
        self.sigterm_received = False
        self._previous_handler = None

    def install(self) -> bool:
        """Take over SIGTERM; only the main thread may install signal handlers (False elsewhere)."""
        if threading.current_thread() is not threading.main_thread():
            logger.warning("enable_jit_checkpoint: training does not run in the main thread, so SIGTERM cannot "
                           "be caught here; no checkpoint will be saved on SIGTERM.")
            return False
        self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
        return True

    def uninstall(self) -> None:
        signal.signal(signal.SIGTERM, self._previous_handler)

    def _on_sigterm(self, signum, frame) -> None:
        # only a flag: saving inside a signal handler could interrupt a half-done optimizer step
        self.sigterm_received = True

    def on_step_end(self, args, state, control, **kwargs):
        if self.sigterm_received:
            logger.warning("SIGTERM received: saving checkpoint-%d and stopping training.", state.global_step)
            control.should_save = True
            control.should_training_stop = True
        return control


@contextlib.contextmanager
def jit_checkpointing(trainer):
    """For one training run in this process: the SIGTERM callback when ``enable_jit_checkpoint``."""
    if not trainer.args.enable_jit_checkpoint:
        yield
        return
    callback = JITCheckpointCallback()
    if not callback.install():
        yield
        return
    trainer.add_callback(callback)
    try:
        yield
    finally:
        trainer.remove_callback(callback)
        callback.uninstall()
