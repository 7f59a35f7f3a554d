"""The live link from rank 0 back to the driver: log entries and step progress while training
runs, and the trained weights and state when it ends.

Ray Train V2 keeps only the metrics reported with a checkpoint, and workers' prints would arrive
as a flood of prefixed log lines, so rank 0 talks to a small actor that the driver owns and polls.
One such actor serves every run of a driver process (each run through its own ``RunLink``): a new
actor is a new process, and starting it took 0.3-0.6 s of the two CPUs that the run's controller
and workers were starting on.
"""

import itertools
import os
import threading
import time

import ray

from ..callbacks import TrainerCallback


@ray.remote(num_cpus=0)
class RunChannel:
    """Events and results of the runs of one driver, each under its run's key."""

    def __init__(self):
        self._events = {}
        self._results = {}

    def push(self, key: str, kind: str, payload) -> None:
        self._events.setdefault(key, []).append((kind, payload))

    def drain(self, key: str) -> list:
        return self._events.pop(key, [])

    def set_result(self, key: str, result) -> None:
        self._results[key] = result

    def take_result(self, key: str):
        """The run's result; the run is forgotten."""
        self._events.pop(key, None)
        return self._results.pop(key, None)


class RunLink:
    """One run's end of the driver's channel: what rank 0 and the driver's display call. Pickles
    (it travels to the workers inside the run's job)."""

    def __init__(self, actor, key: str):
        self.actor, self.key = actor, key

    def push(self, kind: str, payload) -> None:
        self.actor.push.remote(self.key, kind, payload)  # fire and forget: never slows a step

    def drain(self) -> list:
        return ray.get(self.actor.drain.remote(self.key))

    def set_result(self, result) -> None:
        ray.get(self.actor.set_result.remote(self.key, result))

    def take_result(self):
        return ray.get(self.actor.take_result.remote(self.key))

    def forget(self) -> None:
        """Drop what a failed run left (without waiting: the run's own error is what matters)."""
        self.actor.take_result.remote(self.key)


_SHARED = {"session": None, "actor": None}
_SHARED_LOCK = threading.Lock()
_KEYS = itertools.count()


def open_run_link() -> RunLink:
    """A link for a new run, on this driver's channel actor (started with the first run of this
    Ray session, or again if it died)."""
    context = ray.get_runtime_context()
    # job ids start again at 1 on a new cluster (ray.shutdown() then ray.init()); node ids do not
    session = (context.get_node_id(), context.get_job_id())
    with _SHARED_LOCK:
        actor = _SHARED["actor"] if _SHARED["session"] == session else None
        if actor is not None:
            try:
                ray.get(actor.__ray_ready__.remote(), timeout=30)
            except Exception:  # noqa: BLE001 - dead, unreachable or gone with its cluster: start another
                actor = None
        if actor is None:
            actor = RunChannel.remote()
            _SHARED.update(session=session, actor=actor)
    return RunLink(actor, f"{os.getpid()}-{next(_KEYS)}")


class LogStreamCallback(TrainerCallback):
    """On rank 0 of the workers: forwards what the driver displays. Step updates are throttled
    (fire-and-forget actor calls, at most every ``interval`` seconds), logs are always sent."""

    def __init__(self, channel, interval: float = 0.2):
        self.channel = channel
        self.interval = interval
        self._last_sent = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.channel.push("begin", {"max_steps": state.max_steps, "global_step": state.global_step})

    def on_step_end(self, args, state, control, **kwargs):
        now = time.monotonic()
        if now - self._last_sent >= self.interval:
            self._last_sent = now
            self.channel.push("step", {"global_step": state.global_step, "epoch": state.epoch})

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.channel.push("log", {"logs": dict(logs or {}), "global_step": state.global_step,
                                  "epoch": state.epoch})

    def on_train_end(self, args, state, control, **kwargs):
        self.channel.push("step", {"global_step": state.global_step, "epoch": state.epoch})


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
            events = self.channel.drain()
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
