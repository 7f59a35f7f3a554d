"""Formatting and writing metrics: the ``log_metrics``/``save_metrics`` family of the Trainer."""

import json
import logging
import os

logger = logging.getLogger("raytrainer")


def format_runtime(seconds: float) -> str:
    """``h:mm:ss.ff``, the way runtimes are shown in metric reports."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{int(hours)}:{int(minutes):02d}:{secs:05.2f}"


def metrics_format(metrics: dict) -> dict:
    """A copy of ``metrics`` for people: runtimes as h:mm:ss, total_flos in gigaflos, floats rounded."""
    formatted = dict(metrics)
    for key, value in formatted.items():
        if "_runtime" in key:
            formatted[key] = format_runtime(value)
        elif key == "total_flos":
            formatted[key] = f"{int(value) >> 30}GF"
        elif isinstance(value, float):
            formatted[key] = round(value, 4)
    return formatted


def log_metrics(split: str, metrics: dict, is_world_process_zero: bool = True) -> None:
    """Print a metrics block ("***** train metrics *****") on the main process."""
    if not is_world_process_zero:
        return
    print(f"***** {split} metrics *****")
    formatted = metrics_format(metrics)
    width = max((len(k) for k in formatted), default=0)
    value_width = max((len(str(v)) for v in formatted.values()), default=0)
    for key in sorted(formatted):
        print(f"  {key: <{width}} = {formatted[key]:>{value_width}}")


def save_metrics(output_dir: str, split: str, metrics: dict, combined: bool = True) -> None:
    """Write ``<split>_results.json`` and, with ``combined``, merge into ``all_results.json``."""
    os.makedirs(output_dir, exist_ok=True)
    _write_json(os.path.join(output_dir, f"{split}_results.json"), metrics)
    if combined:
        path = os.path.join(output_dir, "all_results.json")
        merged = {}
        if os.path.exists(path):
            with open(path) as f:
                merged = json.load(f)
        merged.update(metrics)
        _write_json(path, merged)


def _write_json(path: str, payload: dict) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=4, sort_keys=True)
    os.replace(tmp, path)

