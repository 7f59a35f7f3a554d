"""A live progress bar and metrics table for Jupyter, in place of tqdm's text bar.

Chosen automatically when the Trainer runs in a notebook kernel and ``disable_tqdm`` is off. In
Ray Train worker runs it is fed on the driver by the live log stream (runtime.channel), so the
table fills in while the workers train.
"""

import html
import sys
import time

from .base import TrainerCallback


def in_notebook() -> bool:
    # a Jupyter kernel has imported IPython before running any cell: without it this is no
    # notebook, and importing it only to ask would cost a script some 40-50 ms
    if "IPython" not in sys.modules:
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _ipython_display(markup: str, handle=None):
    from IPython.display import HTML, display

    if handle is None:
        return display(HTML(markup), display_id=True)
    handle.update(HTML(markup))
    return handle


class NotebookProgressCallback(TrainerCallback):
    """One HTML block: a <progress> bar with step, elapsed time and rate, and a table with one row
    per evaluation (or per training log when there is no evaluation)."""

    def __init__(self, display=_ipython_display, min_interval: float = 0.5):
        self._display = display
        self.min_interval = min_interval
        self._handle = None
        self._rows, self._columns = [], ["Step", "Epoch", "Training Loss"]
        self._last_loss = None
        self._start = self._last_draw = 0.0
        self._step, self._max_steps = 0, 0
        self._training = False  # the table belongs to one training run; later evaluations add no row

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self._training = True
        self._evaluates = str(args.eval_strategy) != "no"
        if self._evaluates and "Validation Loss" not in self._columns:
            self._columns.append("Validation Loss")
        self._start = time.time()
        self._max_steps, self._step = state.max_steps, state.global_step
        self._draw(force=True)

    def on_step_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self._step = state.global_step
            self._draw()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or not self._training:
            return
        if "loss" in logs:
            self._last_loss = logs["loss"]
            if not self._evaluates:
                self._add_row(state, {})
        eval_metrics = {k: v for k, v in logs.items() if k.startswith("eval_") and not _is_speed(k)}
        if eval_metrics:
            self._add_row(state, eval_metrics)
        self._draw(force=True)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self._step = state.global_step
            self._draw(force=True)
            self._training = False

    def _add_row(self, state, eval_metrics: dict):
        row = {"Step": state.global_step, "Epoch": round(state.epoch or 0, 2), "Training Loss": self._last_loss}
        for key, value in eval_metrics.items():
            column = "Validation Loss" if key == "eval_loss" else _title(key)
            if column not in self._columns:
                self._columns.append(column)
            row[column] = value
        self._rows.append(row)

    def _draw(self, force: bool = False):
        now = time.time()
        if not force and now - self._last_draw < self.min_interval:
            return
        self._last_draw = now
        self._handle = self._display(self.render(now - self._start), self._handle)

    def render(self, elapsed: float) -> str:
        rate = f", {self._step / elapsed:.2f} it/s" if elapsed > 0 and self._step else ""
        head = (f"<progress value='{self._step}' max='{self._max_steps}' style='width:300px'></progress> "
                f"[{self._step}/{self._max_steps} {_clock(elapsed)}{rate}]")
        header = "".join(f"<th>{html.escape(c)}</th>" for c in self._columns)
        body = "".join("<tr>" + "".join(f"<td>{_cell(row.get(c))}</td>" for c in self._columns) + "</tr>"
                       for row in self._rows)
        return f"<div>{head}<table border='1' class='dataframe'><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table></div>"


def _is_speed(key: str) -> bool:
    return key.endswith(("_runtime", "_per_second"))


def _title(key: str) -> str:
    return " ".join(part.capitalize() for part in key[len("eval_"):].split("_"))


def _cell(value) -> str:
    if value is None:
        return "No log"
    return f"{value:.6f}" if isinstance(value, float) else html.escape(str(value))


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:02d}:{secs:02d}"
