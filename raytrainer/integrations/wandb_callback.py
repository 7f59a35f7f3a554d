"""``report_to="wandb"``: metrics, configuration and (optionally) models in Weights & Biases.

W&B's own environment variables apply (``WANDB_MODE=offline`` keeps everything on this machine;
``WANDB_PROJECT``, default ``"huggingface"`` as in HF; ``WANDB_ENTITY``, ``WANDB_DIR``,
``WANDB_RUN_GROUP``, ``WANDB_TAGS``, ``WANDB_NOTES``), plus HF's ``WANDB_LOG_MODEL``
(``"checkpoint"``: every saved checkpoint, ``"end"``: the final model, as artifacts) and
``WANDB_WATCH`` (``"gradients"``, ``"parameters"`` or ``"all"``).

The run is named ``run_name``; each trial of a hyperparameter search is its own run, named after
the trial and grouped under the search's ``run_name``. Metric names follow HF (``train/loss``,
``eval/loss``, with ``train/global_step`` as the x-axis); one-off totals (``train_runtime``,
``train_loss``, ...) go to the run summary. As in HF, a run started outside a search stays open
after training (a later ``evaluate()`` logs into it; ``wandb.finish()`` or the end of the
process closes it); a run the user started with ``wandb.init()`` is used as it is.
"""

import os
import tempfile

from .base import ReportingCallback, model_config_dict, rewrite_logs

SUMMARY_KEYS = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss", "total_flos")
LOG_MODEL_CHOICES = ("checkpoint", "end", "false")


class WandbCallback(ReportingCallback):
    """Sends the logs to Weights & Biases (see the module docstring for its settings)."""

    name = "wandb"
    env_vars = ("WANDB_PROJECT", "WANDB_ENTITY", "WANDB_MODE", "WANDB_DIR", "WANDB_RUN_GROUP", "WANDB_TAGS",
                "WANDB_NOTES", "WANDB_LOG_MODEL", "WANDB_WATCH")
    live_attributes = ("_run", "_owns_run")

    def __init__(self):
        super().__init__()
        self._run = None
        self._owns_run = False
        self._resume = None  # {"id", "project", ...} of a run a Ray worker handed back

    @property
    def log_model(self) -> str:
        value = str(self.env("WANDB_LOG_MODEL", "false")).lower()
        if value not in LOG_MODEL_CHOICES:
            self.warn_once("log_model", "WANDB_LOG_MODEL=%r is not one of %s; models are not logged.",
                           value, LOG_MODEL_CHOICES)
            return "false"
        return value

    # ------------------------------------------------------------------ set-up
    def _init_arguments(self, args, state) -> dict:
        trial = state.trial_name if state.is_hyper_param_search else None
        tags = self.env("WANDB_TAGS")
        arguments = dict(
            project=self.env("WANDB_PROJECT", "huggingface"), entity=self.env("WANDB_ENTITY"),
            mode=self.env("WANDB_MODE"), dir=self.env("WANDB_DIR"), notes=self.env("WANDB_NOTES"),
            name=trial or args.run_name, group=str(args.run_name) if trial else self.env("WANDB_RUN_GROUP"),
            tags=[t.strip() for t in tags.split(",") if t.strip()] if tags else None,
            # a trial's run must not end (or reuse) a parallel trial's run; any other run becomes
            # wandb.run, which the user ends with wandb.finish() as in HF
            reinit="create_new" if trial else None,
        )
        if arguments["dir"]:
            os.makedirs(arguments["dir"], exist_ok=True)
        return {key: value for key, value in arguments.items() if value is not None}

    def setup(self, args, state, model) -> None:
        import wandb

        searching = state.is_hyper_param_search and state.trial_name
        if not searching and self._run is None and wandb.run is not None:
            self._run, self._owns_run = wandb.run, False  # the user's own run
        elif self._run is None:
            self._run, self._owns_run = wandb.init(**self._init_arguments(args, state)), True
        from ..modeling import count_parameters

        config = {**model_config_dict(model), **args.to_dict()}
        if model is not None:
            config["model/num_parameters"] = count_parameters(model, trainable_only=False)
        self._run.config.update(config, allow_val_change=True)
        self._run.define_metric("train/global_step")
        self._run.define_metric("*", step_metric="train/global_step", step_sync=True)
        watch = self.env("WANDB_WATCH", "false")
        if model is not None and watch in ("gradients", "parameters", "all"):
            self._run.watch(model, log=watch, log_freq=max(100, state.logging_steps))

    def _ready(self, args, state, model) -> bool:
        if not state.is_world_process_zero:
            return False
        if self._run is None and self._resume is not None:
            import wandb

            self._run = wandb.init(**self._resume, resume="allow")
            self._owns_run, self._resume = True, None
        elif self._run is None:
            self.setup(args, state, model)
        return True

    # ------------------------------------------------------------------ events
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero:
            return
        if state.is_hyper_param_search and self._run is not None and self._owns_run:
            self._finish()  # a new trial in this process: a new run
        if self._run is None or state.is_hyper_param_search:
            self._resume = None
            self.setup(args, state, model)

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        if not self._ready(args, state, model):
            return
        logs = dict(logs or {})
        for key in SUMMARY_KEYS:
            if key in logs:
                self._run.summary[key] = logs.pop(key)
        self._run.log({**rewrite_logs(logs), "train/global_step": state.global_step})

    def on_predict(self, args, state, control, metrics=None, model=None, **kwargs):
        if self._ready(args, state, model):
            self._run.log(rewrite_logs(dict(metrics or {})))

    def on_save(self, args, state, control, checkpoint_folder=None, **kwargs):
        if not (state.is_world_process_zero and self._run is not None and self.log_model == "checkpoint"):
            return
        folder = self.saved_checkpoint(args, state, checkpoint_folder)
        if folder is not None:
            self._log_model_folder(folder, [f"checkpoint_global_step_{state.global_step}"])

    def on_train_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if not (state.is_world_process_zero and self._run is not None):
            return
        if self.log_model == "end" and model is not None:
            self._log_final_model(args, model, processing_class)
        if state.is_hyper_param_search and self._owns_run:
            self._finish()  # a trial's run is complete; parallel trials must not inherit it

    # ------------------------------------------------------------------ models as artifacts
    def _log_model_folder(self, folder: str, aliases: list) -> None:
        import wandb

        artifact = wandb.Artifact(name=f"model-{self._run.id}", type="model")
        artifact.add_dir(folder)
        self._run.log_artifact(artifact, aliases=aliases)

    def _log_final_model(self, args, model, processing_class) -> None:
        from ..checkpoints import save_weights

        with tempfile.TemporaryDirectory() as folder:
            save_weights(model, folder, args.save_safetensors)
            if callable(getattr(processing_class, "save_pretrained", None)):
                processing_class.save_pretrained(folder)
            self._log_model_folder(folder, ["final_model"])

    # ------------------------------------------------------------------ closing and hand-off
    def _finish(self) -> None:
        self._run.finish()
        self._run, self._owns_run = None, False

    def close_for_handoff(self):
        if self._run is None or not self._owns_run:
            return None
        handle = {"id": self._run.id, "project": self._run.project, "entity": self._run.entity or None,
                  "mode": self.env("WANDB_MODE"), "dir": self.env("WANDB_DIR")}
        self._finish()
        return {key: value for key, value in handle.items() if value}

    def adopt(self, handle) -> None:
        if handle:
            self._run, self._owns_run, self._resume = None, False, dict(handle)
