"""``report_to="mlflow"``: parameters, metrics by step and (optionally) checkpoints in MLflow.

Every call names its run explicitly (``MlflowClient``), so trials running side by side in one
process never share MLflow's process-wide "active run". HF's environment variables apply:

- ``MLFLOW_TRACKING_URI``: the store or server (default: MLflow's own, ``sqlite:///mlflow.db``
  in MLflow 3), ``MLFLOW_EXPERIMENT_NAME``: the experiment (created when missing);
- ``MLFLOW_RUN_ID``: log into that existing run; ``MLFLOW_NESTED_RUN``: a child of the run
  active in this process; a run the user started with ``mlflow.start_run()`` is used as it is
  (and left open);
- ``MLFLOW_TAGS`` (JSON object), ``MLFLOW_FLATTEN_PARAMS``, ``MLFLOW_MAX_LOG_PARAMS``;
- ``HF_MLFLOW_LOG_ARTIFACTS``: upload every saved checkpoint folder as artifacts
  (``checkpoint-<step>/...``).

The run is named ``run_name`` (a search trial: the trial's name, tagged with the search's
``run_name``). Parameters are the arguments (and a transformers model's config); metrics keep
the Trainer's names (``loss``, ``eval_loss``, ...), logged at ``state.global_step``.
"""

import json
import os
import re
import time

from .base import ReportingCallback, model_config_dict, scalar_value

MAX_PARAMS_PER_BATCH = 100  # MLflow's limit on parameters per log_batch call
SEARCH_TAG = "raytrainer.hp_search"


def flatten(values: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


class MLflowCallback(ReportingCallback):
    """Sends the logs to MLflow (see the module docstring for its settings)."""

    name = "mlflow"
    env_vars = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID", "MLFLOW_NESTED_RUN",
                "MLFLOW_TAGS", "MLFLOW_FLATTEN_PARAMS", "MLFLOW_MAX_LOG_PARAMS", "HF_MLFLOW_LOG_ARTIFACTS")
    live_attributes = ("_client", "_open", "_ends_run")

    def __init__(self):
        super().__init__()
        self._client = None
        self.tracking_uri = None
        self.run_id = None
        self._ends_run = False  # whether this callback started (or resumed) the run, so ends it
        self._open = False  # a run is in progress: the next train() continues it (e.g. after an evaluate())

    # ------------------------------------------------------------------ set-up
    def setup(self, args, state, model) -> None:
        import mlflow

        self.tracking_uri = self.env("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()
        self._client = mlflow.MlflowClient(self.tracking_uri)
        active = mlflow.active_run()  # a run the user started in this process (local mode)
        if self.env("MLFLOW_RUN_ID"):
            self.run_id, self._ends_run = self.env("MLFLOW_RUN_ID"), True
            self._client.update_run(self.run_id, status="RUNNING")
        elif active is not None and not self.env_flag("MLFLOW_NESTED_RUN"):
            self.run_id, self._ends_run = active.info.run_id, False
        else:
            tags = self._run_tags(args, state)
            if active is not None:
                tags["mlflow.parentRunId"] = active.info.run_id
            run_name = state.trial_name if state.is_hyper_param_search and state.trial_name else args.run_name
            run = self._client.create_run(self._experiment_id(mlflow), run_name=run_name, tags=tags)
            self.run_id, self._ends_run = run.info.run_id, True
        self._open = True
        self._log_params(args, model)

    def _experiment_id(self, mlflow) -> str:
        name = self.env("MLFLOW_EXPERIMENT_NAME")
        if name:
            experiment = self._client.get_experiment_by_name(name)
            return experiment.experiment_id if experiment else self._client.create_experiment(name)
        try:  # the experiment chosen with mlflow.set_experiment() or MLFLOW_EXPERIMENT_ID, else "Default"
            from mlflow.tracking.fluent import _get_experiment_id

            return _get_experiment_id() or "0"
        except Exception:  # noqa: BLE001 - a private helper of MLflow; "Default" is always there
            return "0"

    def _run_tags(self, args, state) -> dict:
        tags = {}
        if self.env("MLFLOW_TAGS"):
            try:
                tags.update({str(k): str(v) for k, v in json.loads(self.env("MLFLOW_TAGS")).items()})
            except (ValueError, AttributeError):
                raise ValueError(f"MLFLOW_TAGS must be a JSON object such as '{{\"team\": \"nlp\"}}', "
                                 f"got {self.env('MLFLOW_TAGS')!r}.") from None
        if state.is_hyper_param_search and state.trial_name:
            tags[SEARCH_TAG] = str(args.run_name)
        return tags

    def _log_params(self, args, model) -> None:
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        values = {**model_config_dict(model), **args.to_dict()}
        if self.env_flag("MLFLOW_FLATTEN_PARAMS"):
            values = flatten(values)
        params = []
        for key, value in values.items():
            if len(str(value)) > MAX_PARAM_VAL_LENGTH:
                self.warn_once(f"param:{key}", "MLflow: parameter %s is longer than %d characters and is not logged "
                               "(MLFLOW_FLATTEN_PARAMS=TRUE splits nested values).", key, MAX_PARAM_VAL_LENGTH)
                continue
            params.append(Param(key, str(value)))
        limit = self.env("MLFLOW_MAX_LOG_PARAMS")
        if limit and str(limit).isdigit():
            params = params[: int(limit)]
        try:
            for start in range(0, len(params), MAX_PARAMS_PER_BATCH):
                self._client.log_batch(self.run_id, params=params[start: start + MAX_PARAMS_PER_BATCH])
        except MlflowException as error:  # a resumed run keeps the values it was started with
            self.warn_once("params", "MLflow: the parameters were not logged to run %s: %s", self.run_id, error)

    def _ready(self, args, state, model) -> bool:
        if not state.is_world_process_zero:
            return False
        if self._client is None:
            if self.run_id is not None:  # a run handed back by a Ray worker, or an earlier train()
                import mlflow

                self._client = mlflow.MlflowClient(self.tracking_uri)
            else:
                self.setup(args, state, model)
        return True

    # ------------------------------------------------------------------ events
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero and not self._open:
            self.setup(args, state, model)  # a train() after an ended one is a new run

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        if not self._ready(args, state, model):
            return
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        metrics = []
        for key, value in (logs or {}).items():
            scalar = scalar_value(value)
            if scalar is None:
                self.warn_once(key, "MLflow: %s is a %s, not a number; it is not logged.", key, type(value).__name__)
                continue
            name = re.sub(r"[^0-9A-Za-z_\-. :/]", "_", key)  # MLflow's allowed metric-name characters
            metrics.append(Metric(name, float(scalar), timestamp, state.global_step))
        if metrics:
            self._client.log_batch(self.run_id, metrics=metrics)

    def on_save(self, args, state, control, checkpoint_folder=None, **kwargs):
        if not (state.is_world_process_zero and self.env_flag("HF_MLFLOW_LOG_ARTIFACTS") and self.run_id):
            return
        folder = self.saved_checkpoint(args, state, checkpoint_folder)
        if folder is not None:
            self._client.log_artifacts(self.run_id, folder, artifact_path=os.path.basename(folder))

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self._end_run()

    def _end_run(self) -> None:
        if self._client is not None and self._ends_run:
            self._client.set_terminated(self.run_id)
            # a later evaluate() logs into the finished run, a later train() starts a new one
            self._ends_run = self._open = False

    def close_for_handoff(self):
        self._end_run()
        return {"tracking_uri": self.tracking_uri, "run_id": self.run_id} if self.run_id else None

    def adopt(self, handle) -> None:
        if handle:
            self.tracking_uri, self.run_id, self._client = handle["tracking_uri"], handle["run_id"], None
            self._open = self._ends_run = False
