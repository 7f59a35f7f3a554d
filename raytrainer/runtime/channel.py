"""The live link from rank 0 back to the driver: log entries and step progress while training
runs, and the trained weights and state when it ends.

Ray Train V2 keeps only the metrics reported with a checkpoint, and workers' prints would arrive
as a flood of prefixed log lines, so rank 0 talks to a small actor that the driver owns and polls.
"""

import threading
import time

import ray

from ..callbacks import TrainerCallback


@ray.remote(num_cpus=0)
class RunChannel:
    def __init__(self):
        self._events = []
        self._result = None

    def push(self, kind: str, payload) -> None:
        self._events.append((kind, payload))

    def drain(self) -> list:
        events, self._events = self._events, []
        return events

    def set_result(self, result) -> None:
        self._result = result

    def result(self):
        return self._result


class LogStreamCallback(TrainerCallback):
    """On rank 0 of the workers: forwards what the driver displays. Step updates are throttled
    (fire-and-forget actor calls, at most every ``interval`` seconds), logs are always sent."""

    def __init__(self, channel, interval: float = 0.2):
        self.channel = channel
        self.interval = interval
        self._last_sent = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.channel.push.remote("begin", {"max_steps": state.max_steps, "global_step": state.global_step})

    def on_step_end(self, args, state, control, **kwargs):
        now = time.monotonic()
        if now - self._last_sent >= self.interval:
            self._last_sent = now
            self.channel.push.remote("step", {"global_step": state.global_step, "epoch": state.epoch})

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.channel.push.remote("log", {"logs": dict(logs or {}), "global_step": state.global_step,
                                         "epoch": state.epoch})

    def on_train_end(self, args, state, control, **kwargs):
        self.channel.push.remote("step", {"global_step": state.global_step, "epoch": state.epoch})


class DriverDisplay:
    """Replays the stream into the driver's display callbacks (progress bar, printer, notebook
    table) on a mirror TrainerState; log entries also become the driver's live log_history."""

    def __init__(self, trainer, channel, poll_interval: float = 0.5):
        from ..callbacks import CallbackHandler
        from ..state import TrainerControl, TrainerState

        display = [cb for cb in trainer.callback_handler.callbacks
                   if type(cb).__name__ in ("ProgressCallback", "PrinterCallback", "NotebookProgressCallback")]
        # display only: this handler never drives a loop, so it needs no DefaultFlowCallback
        self.handler = CallbackHandler(display, trainer.model, trainer.processing_class, None, None,
                                       warn_without_flow=False)
        self.args = trainer.args
        self.state = TrainerState(is_hyper_param_search=False)
        self.control = TrainerControl()
        self.channel = channel
        self.poll_interval = poll_interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="raytrainer-display", daemon=True)
        self.started = False

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._pump()  # whatever arrived after the last poll
        if self.started:
            self.handler.on_train_end(self.args, self.state, self.control)

    def _run(self):
        while not self._stop.wait(self.poll_interval):
            self._pump()

    def _pump(self):
        try:
            events = ray.get(self.channel.drain.remote())
        except ray.exceptions.RayError:
            return
        for kind, payload in events:
            self._apply(kind, payload)

    def _apply(self, kind: str, payload: dict):
        state = self.state
        state.global_step = payload.get("global_step", state.global_step)
        state.epoch = payload.get("epoch", state.epoch)
        if kind == "begin":
            state.max_steps = payload["max_steps"]
            self.started = True
            self.handler.on_train_begin(self.args, state, self.control)
        elif kind == "step" and self.started:
            self.handler.on_step_end(self.args, state, self.control)
        elif kind == "log":
            state.log_history.append({**payload["logs"], "step": state.global_step})
            self.handler.on_log(self.args, state, self.control, logs=payload["logs"])
