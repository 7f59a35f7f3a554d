"""Console display of training: tqdm bars (``ProgressCallback``) or plain prints (``PrinterCallback``).

Logs are shown without ``total_flos`` (a bookkeeping counter, not a metric), with floats
shortened and long strings cut, so that a log line stays one readable line.
"""

from __future__ import annotations

from tqdm.auto import tqdm

from raytrainer.callbacks.base import TrainerCallback


def format_logs(logs: dict, max_str_len: int = 100) -> str:
    """Render a log dict as one ``{'key': value, ...}`` line for the console.

    ``total_flos`` is dropped; ``epoch`` is rounded to 2 decimals and other floats are written
    with 4 significant digits; strings longer than ``max_str_len`` are cut to that length and
    followed by their full length.
    """
    parts = []
    for key, value in logs.items():
        if key == "total_flos":
            continue
        parts.append(f"{key!r}: {_format_value(key, value, max_str_len)}")
    return "{" + ", ".join(parts) + "}"


def _format_value(key: str, value, max_str_len: int) -> str:
    if isinstance(value, float):
        return repr(round(value, 2)) if key == "epoch" else format(value, ".4g")
    if isinstance(value, str) and len(value) > max_str_len:
        return repr(f"{value[:max_str_len]}... [{len(value)} chars; raise max_str_len to see all]")
    return repr(value)


def _has_length(dataloader) -> bool:
    # Streaming (iterable) loaders have no len(); only then is a prediction bar impossible.
    try:
        return dataloader is not None and len(dataloader) >= 0
    except TypeError:
        return False


class ProgressCallback(TrainerCallback):
    """A tqdm bar for training steps and one for evaluation batches, on the world's process zero.

    Logs are written through the training bar so the bar is redrawn under them instead of being
    split. Without a terminal tqdm still writes plain lines, so this is safe in CI logs too.
    """

    def __init__(self, max_str_len: int = 100):
        if not isinstance(max_str_len, int) or isinstance(max_str_len, bool) or max_str_len < 1:
            raise ValueError(
                f"max_str_len={max_str_len!r} must be a positive int (the longest string value "
                "shown in a log line)."
            )
        self.max_str_len = max_str_len
        self.training_bar = None
        self.prediction_bar = None
        self._shown_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.training_bar = tqdm(total=state.max_steps, dynamic_ncols=True)
            self._shown_step = 0

    def on_step_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None:
            # global_step may jump (resume, several steps per report), so advance by the gap.
            self.training_bar.update(state.global_step - self._shown_step)
            self._shown_step = state.global_step

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        if not state.is_world_process_zero or not _has_length(eval_dataloader):
            return
        if self.prediction_bar is None:
            # Outside training the bar is the only output, so keep it on screen when done.
            self.prediction_bar = tqdm(
                total=len(eval_dataloader), leave=self.training_bar is None, dynamic_ncols=True
            )
        self.prediction_bar.update(1)

    def on_evaluate(self, args, state, control, **kwargs):
        self._close_prediction_bar(state)

    def on_predict(self, args, state, control, **kwargs):
        self._close_prediction_bar(state)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs:
            self.training_bar.write(format_logs(logs, self.max_str_len))

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None:
            self.training_bar.close()
            self.training_bar = None

    def _close_prediction_bar(self, state) -> None:
        if state.is_world_process_zero and self.prediction_bar is not None:
            self.prediction_bar.close()
            self.prediction_bar = None


class PrinterCallback(TrainerCallback):
    """Prints every log dict (without ``total_flos``) on the local process zero; no bars."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_local_process_zero and logs:
            print({key: value for key, value in logs.items() if key != "total_flos"})


def progress_callback_class(args) -> type:
    """The display callback the Trainer installs: ``PrinterCallback`` when ``disable_tqdm`` is set,
    the live HTML table in a Jupyter kernel, else the tqdm bar."""
    from .notebook import NotebookProgressCallback, in_notebook

    if getattr(args, "disable_tqdm", False):
        return PrinterCallback
    return NotebookProgressCallback if in_notebook() else ProgressCallback
