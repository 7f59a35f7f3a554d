"""What a search returns and leaves behind: ``BestRun``, one ``TrialRecord`` per trial, and the
results table (CSV and JSON) and plot (PNG, when matplotlib is installed) in ``output_dir``."""

import csv
import dataclasses
import json
import logging
import math
import os
from typing import Any, NamedTuple, Optional, Union

logger = logging.getLogger("raytrainer")
TABLE_NAME = "hp_search_results"


class _BestRunFields(NamedTuple):
    run_id: str
    objective: Union[float, list]
    hyperparameters: dict
    run_summary: Optional[Any] = None


class BestRun(_BestRunFields):
    """The best trial of a search: HF's four fields (``run_id``, ``objective``,
    ``hyperparameters``, ``run_summary``; it still unpacks as a 4-tuple), plus ``checkpoint``
    (the trial's best checkpoint folder, or None) and ``checkpoint_metrics`` (its evaluation)."""

    def __new__(cls, run_id, objective, hyperparameters, run_summary=None, checkpoint=None,
                checkpoint_metrics=None):
        run = super().__new__(cls, run_id, objective, hyperparameters, run_summary)
        run.checkpoint = checkpoint
        run.checkpoint_metrics = checkpoint_metrics
        return run

    def __repr__(self) -> str:
        return (f"BestRun(run_id={self.run_id!r}, objective={self.objective!r}, hyperparameters="
                f"{self.hyperparameters!r}, checkpoint={self.checkpoint!r})")


@dataclasses.dataclass
class TrialRecord:
    """One trial: ``status`` is complete, pruned (Optuna), stopped (a Tune scheduler stopped it
    early), failed or running; ``objective`` is the final objective (a list, one per direction)."""

    run_id: str
    run_name: str
    status: str
    objective: Optional[list] = None
    hyperparameters: dict = dataclasses.field(default_factory=dict)
    history: list = dataclasses.field(default_factory=list)  # [(step, [values])], one per evaluation
    checkpoint: Optional[str] = None
    checkpoint_metrics: Optional[dict] = None
    global_step: Optional[int] = None
    train_runtime: Optional[float] = None
    wall_time: Optional[float] = None
    error: Optional[str] = None

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["history"] = [[step, list(values)] for step, values in self.history]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "TrialRecord":
        known = {f.name for f in dataclasses.fields(cls)}
        record = cls(**{key: value for key, value in data.items() if key in known})
        record.history = [(step, list(values)) for step, values in record.history]
        return record

    @property
    def overhead(self) -> Optional[float]:
        """Seconds of the trial not spent in the training loop (set-up, model_init, evaluation at
        the end, result writing)."""
        if self.wall_time is None or self.train_runtime is None:
            return None
        return self.wall_time - self.train_runtime


def write_results(output_dir: str, records: list, directions: list) -> dict:
    """Write ``hp_search_results.csv``/``.json`` (and ``.png`` when matplotlib is importable)
    into ``output_dir``; returns ``{"csv": path, "json": path, "png": path or None}``."""
    os.makedirs(output_dir, exist_ok=True)
    base = os.path.join(output_dir, TABLE_NAME)
    rows = table_rows(records, directions)
    with open(f"{base}.json", "w") as f:
        json.dump({"directions": directions, "trials": [r.to_dict() for r in records]}, f, indent=2, default=str)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(f"{base}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    from .plot import plot_results

    png = plot_results(f"{base}.png", records, directions)
    return {"csv": f"{base}.csv", "json": f"{base}.json", "png": png}


def table_rows(records: list, directions: list) -> list:
    """One flat row per trial: id, status, objective(s), each hyperparameter, checkpoint, times."""
    rows = []
    for record in records:
        row = {"run_id": record.run_id, "run_name": record.run_name, "status": record.status}
        for index in range(len(directions)):
            name = "objective" if len(directions) == 1 else f"objective_{index}"
            row[name] = record.objective[index] if record.objective else ""
        row.update({f"hp_{name}": value for name, value in sorted(record.hyperparameters.items())})
        row.update(evaluations=len(record.history), global_step=_blank(record.global_step),
                   checkpoint=record.checkpoint or "", train_runtime=_rounded(record.train_runtime),
                   wall_time=_rounded(record.wall_time), error=record.error or "")
        rows.append(row)
    return rows


def _blank(value):
    return "" if value is None else value


def _rounded(value):
    return "" if value is None or not math.isfinite(value) else round(value, 3)
