"""Saving a checkpoint before a worker is taken away.

Two warnings reach a Ray Train worker: Ray's own preemption notice (``get_preemption_info``, e.g. a
spot node being reclaimed) and SIGTERM. Both are looked at every ``check_every`` optimizer steps,
by all ranks at the same steps, because each look is a collective. A preemption notice makes the
next step end save a checkpoint and training goes on (Ray restarts the run from it when the node
goes). SIGTERM saves and then stops this worker, so Ray's restart resumes from that checkpoint.
"""

import signal
import threading

import torch
import torch.distributed as dist

from ..callbacks import TrainerCallback


class PreemptionCallback(TrainerCallback):
    def __init__(self, check_every: int = 10):
        self.check_every = check_every
        self.sigterm_received = False
        self._saved_for_notice = False
        self._stop_after_save = False

    def install_sigterm_handler(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame):
        self.sigterm_received = True  # acted on at the next check, where all ranks agree

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.check_every:
            return control
        import ray.train

        notice = ray.train.get_preemption_info()
        terminating = _any_rank(self.sigterm_received, args)
        if terminating or (notice is not None and not self._saved_for_notice):
            control.should_save = True
            self._saved_for_notice = notice is not None
            self._stop_after_save = terminating
        return control

    def on_save(self, args, state, control, **kwargs):
        if self._stop_after_save:
            raise SystemExit(f"raytrainer: SIGTERM received; checkpoint-{state.global_step} saved, stopping.")
        return control


def _any_rank(flag: bool, args) -> bool:
    if args.world_size > 1 and dist.is_initialized():
        tensor = torch.tensor([int(flag)], device=args.device)  # nccl needs a GPU tensor
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())
    return flag
