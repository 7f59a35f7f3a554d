"""``raytrainer results OUTPUT_DIR [--json]``: what a run or a sweep left in its output folder.

A sweep's folder has ``hp_search_results.json`` (one row per trial); a run's has
``trainer_state.json`` (written at the end of ``raytrainer train``; during a run, the latest
checkpoint's copy is read), whose log history becomes one row per logged step.
"""

import json
import os

from ..hpo.results import TABLE_NAME
from ._table import format_mapping, format_table

SUMMARY_KEYS = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos", "train_loss")


class NoResults(Exception):
    """The folder holds neither a run's state nor a sweep's results."""


def add_parser(subparsers):
    parser = subparsers.add_parser("results", help="show a run's log history or a sweep's trials",
                                   description="Show the log history of a run or the trial table of a sweep.",
                                   allow_abbrev=False)
    parser.add_argument("output_dir", help="the run's or sweep's output_dir")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(run=run, accepts_overrides=False)
    return parser


def run(namespace, extra) -> int:
    import sys

    try:
        kind, data = read_results(namespace.output_dir)
    except NoResults as error:
        print(f"raytrainer results: {error}", file=sys.stderr)
        return 1
    if namespace.json:
        print(json.dumps({"kind": kind, **data}, indent=2, default=str))
    elif kind == "sweep":
        print_sweep(data)
    else:
        print_run(data)
    return 0


def read_results(output_dir: str):
    """``("sweep", {"directions", "trials"})`` or ``("run", {"state_file", "global_step",
    "best_model_checkpoint", "log_history"})``."""
    sweep = os.path.join(output_dir, f"{TABLE_NAME}.json")
    if os.path.isfile(sweep):
        with open(sweep) as f:
            return "sweep", json.load(f)
    state_file = _state_file(output_dir)
    if state_file is None:
        raise NoResults(f"{output_dir} holds neither {TABLE_NAME}.json (a sweep) nor trainer_state.json (a run, "
                        "in the folder or its latest checkpoint-<step>); give the output_dir of a run or sweep.")
    with open(state_file) as f:
        state = json.load(f)
    return "run", {"state_file": os.path.abspath(state_file), "global_step": state.get("global_step"),
                   "best_model_checkpoint": state.get("best_model_checkpoint"),
                   "log_history": state.get("log_history", [])}


def _state_file(output_dir: str):
    from ..checkpoints.layout import sorted_checkpoints

    candidates = [os.path.join(output_dir, "trainer_state.json")]
    candidates += [os.path.join(path, "trainer_state.json") for path in reversed(sorted_checkpoints(output_dir))]
    return next((path for path in candidates if os.path.isfile(path)), None)


def print_run(data: dict) -> None:
    rows, summary = history_rows(data["log_history"])
    if rows:
        print(format_table(rows))
    if summary:
        print("\n" + format_mapping(summary))
    print(f"\nglobal step {data['global_step']}  ({data['state_file']})")
    if data.get("best_model_checkpoint"):
        print(f"best checkpoint: {data['best_model_checkpoint']}")


def history_rows(log_history: list):
    """One row per step (training logs and evaluations of a step merged), and the final summary."""
    by_step, summary = {}, {}
    for entry in log_history:
        if any(key in entry for key in SUMMARY_KEYS):
            summary.update({key: value for key, value in entry.items() if key != "step"})
            continue
        by_step.setdefault(entry.get("step"), {"step": entry.get("step")}).update(entry)
    return [by_step[step] for step in sorted(by_step, key=lambda s: (s is None, s))], summary


def print_sweep(data: dict) -> None:
    from ..hpo.results import TrialRecord, table_rows

    records = [TrialRecord.from_dict(trial) for trial in data.get("trials", [])]
    rows = table_rows(records, data.get("directions", ["minimize"]))
    columns = [c for c in dict.fromkeys(key for row in rows for key in row)
               if c not in ("run_name", "train_runtime", "error", "evaluations")]
    print(format_table(rows, columns))
    failed = [record for record in records if record.error]
    for record in failed[:3]:
        print(f"trial {record.run_id} {record.status}: {record.error}")
