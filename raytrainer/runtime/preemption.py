"""Saving a checkpoint before a worker is taken away.

Two warnings reach a Ray Train worker: Ray's own preemption notice (``get_preemption_info``, e.g. a
spot node being reclaimed) and SIGTERM. Each look is a collective (Ray's call is a barrier, and
the SIGTERM flag is all-reduced), so all ranks look at the same steps: about every
``interval_seconds`` (Ray polls for notices every 5 s, looking more often finds nothing sooner),
with the next step to look at agreed on in the same all-reduce. A preemption notice makes that
step save a checkpoint and training goes on (Ray restarts the run from it when the node goes).
SIGTERM saves and then stops this worker, so Ray's restart resumes from that checkpoint.
"""

import signal
import threading
import time

import torch
import torch.distributed as dist

from ..callbacks import TrainerCallback


class PreemptionCallback(TrainerCallback):
    def __init__(self, interval_seconds: float = 5.0, first_check: int = 10, max_gap: int = 1000):
        self.interval_seconds = interval_seconds
        self.max_gap = max_gap
        self.next_check = first_check
        self.sigterm_received = False
        self._saved_for_notice = False
        self._stop_after_save = False
        self._last_time, self._last_step = time.monotonic(), 0

    def install_sigterm_handler(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame):
        self.sigterm_received = True  # acted on at the next check, where all ranks agree

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step < self.next_check:
            return control
        import ray.train

        notice = ray.train.get_preemption_info()
        terminating, gap = _agree(self.sigterm_received, self._proposed_gap(state.global_step), args)
        self.next_check = state.global_step + gap
        if terminating or (notice is not None and not self._saved_for_notice):
            control.should_save = True
            self._saved_for_notice = notice is not None
            self._stop_after_save = terminating
        return control

    def _proposed_gap(self, step: int) -> int:
        now = time.monotonic()
        per_step = (now - self._last_time) / max(1, step - self._last_step)
        self._last_time, self._last_step = now, step
        return int(min(self.max_gap, max(1, round(self.interval_seconds / max(per_step, 1e-6)))))

    def on_save(self, args, state, control, **kwargs):
        if self._stop_after_save:
            raise SystemExit(f"raytrainer: SIGTERM received; checkpoint-{state.global_step} saved, stopping.")
        return control


def _agree(flag: bool, gap: int, args) -> tuple:
    """(any rank got SIGTERM, the largest proposed gap), identical on every rank."""
    if args.world_size > 1 and dist.is_initialized():
        tensor = torch.tensor([int(flag), gap], device=args.device)  # nccl needs a GPU tensor
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor[0].item()), int(tensor[1].item())
    return flag, gap
