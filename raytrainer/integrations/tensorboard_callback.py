"""``report_to="tensorboard"``: event files that TensorBoard reads.

Logs go to ``TENSORBOARD_LOGGING_DIR`` when it is set, else to ``TrainingArguments.logging_dir``
(``output_dir/runs/<time>_<host>`` by default); each trial of a hyperparameter search writes to
its own sub-folder named after the trial. Tags follow HF: ``train/loss``, ``train/learning_rate``,
``eval/loss``, ``eval/<metric>``, ``test/<metric>``; the arguments (and a transformers model's
config) are stored as text.
"""

import json
import os

from .base import ReportingCallback, model_config_dict, rewrite_logs, scalar_value


def _summary_writer_class():
    try:
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package
    except ImportError:
        from tensorboardX import SummaryWriter
    return SummaryWriter


class TensorBoardCallback(ReportingCallback):
    """Sends the logs to TensorBoard. ``tb_writer``: a ``SummaryWriter`` to use instead of one
    opened by the callback (it is then left open at the end of training)."""

    name = "tensorboard"
    env_vars = ("TENSORBOARD_LOGGING_DIR",)
    live_attributes = ("tb_writer",)

    def __init__(self, tb_writer=None):
        super().__init__()
        self.tb_writer = tb_writer
        self._owns_writer = tb_writer is None
        self.log_dir = None  # where the last writer this callback opened writes

    def log_dir_for(self, args, state) -> str:
        base = os.path.expanduser(self.env("TENSORBOARD_LOGGING_DIR") or args.logging_dir)
        if state.is_hyper_param_search and state.trial_name:
            return os.path.join(base, state.trial_name)
        return base

    def _open(self, args, state) -> None:
        if self.tb_writer is None:
            self.log_dir = self.log_dir or self.log_dir_for(args, state)
            self.tb_writer = _summary_writer_class()(log_dir=self.log_dir)
            self._owns_writer = True

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero:
            return
        self.log_dir = self.log_dir_for(args, state)  # a new run (or trial) may write elsewhere
        self._open(args, state)
        self.tb_writer.add_text("args", args.to_json_string())
        config = model_config_dict(model)
        if config:
            self.tb_writer.add_text("model_config", json.dumps(config, indent=2, sort_keys=True, default=str))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:
            return
        self._open(args, state)
        for tag, value in rewrite_logs(logs or {}).items():
            scalar = scalar_value(value)
            if scalar is not None:
                self.tb_writer.add_scalar(tag, scalar, state.global_step)
            elif isinstance(value, str):
                self.tb_writer.add_text(tag, value, state.global_step)
            else:
                self.warn_once(tag, "TensorBoard: %s is a %s, not a number or text; it is not logged.",
                               tag, type(value).__name__)
        self.tb_writer.flush()

    def on_train_end(self, args, state, control, **kwargs):
        if self.tb_writer is not None and self._owns_writer:
            self.tb_writer.close()
            self.tb_writer = None

    def close_for_handoff(self):
        if self.tb_writer is not None and self._owns_writer:
            self.tb_writer.close()
            self.tb_writer = None
        return {"log_dir": self.log_dir} if self.log_dir else None

    def adopt(self, handle) -> None:
        if handle:
            self.log_dir = handle["log_dir"]
