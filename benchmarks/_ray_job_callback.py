"""raytrainer's side of the rank-0 clock in ``ray_overhead.py``: a callback that stamps the same
moments as the hand-written loop in ``_ray_job.raw_train_loop``. Kept apart from ``_ray_job`` so
the reference's workers never import raytrainer."""

import os
import time

from _ray_job import RankZeroClock

from raytrainer import TrainerCallback


class RankZeroClockCallback(TrainerCallback):
    """Stamps, on every rank, when this callback is unpickled on the worker (the worker function
    has just fetched the Trainer's blueprint: the first moment user code runs there), the start
    of the loop, every optimizer step's end and the end of training; rank 0 writes them."""

    def __init__(self, clock_path: str):
        self.clock = RankZeroClock(clock_path)
        self.driver_pid = os.getpid()

    def __setstate__(self, state):
        self.__dict__.update(state)
        # only the first unpickling in a worker process counts: a copy made on the driver, or a
        # later copy on the worker, must not move the stamp
        if os.getpid() != self.driver_pid:
            self.clock.marks.setdefault("worker_start", time.time())

    def on_train_begin(self, args, state, control, **kwargs):
        self.clock.mark("loop_start")

    def on_step_end(self, args, state, control, **kwargs):
        self.clock.step_end()

    def on_train_end(self, args, state, control, **kwargs):
        self.clock.mark("worker_end")
        if state.is_world_process_zero:
            self.clock.write()
