"""The results plot: the objective of every trial in order, and against each hyperparameter.
matplotlib is optional (``pip install raytrainer[plot]``); without it no PNG is written."""

import logging

logger = logging.getLogger("raytrainer")
_STATUS_COLOURS = {"complete": "tab:blue", "pruned": "tab:orange", "stopped": "tab:orange", "failed": "tab:red"}


def plot_results(path: str, records: list, directions: list):
    """Write the PNG to ``path`` and return it, or return None when matplotlib is not installed
    or no trial has an objective."""
    try:
        figure = results_figure(records, directions)
    except ImportError:
        logger.info("hyperparameter_search: matplotlib is not installed, so no results plot (%s); "
                    "pip install matplotlib to get one.", path)
        return None
    if figure is None:
        return None
    figure.savefig(path, dpi=80)
    return path


def results_figure(records: list, directions: list):
    """The plot as a matplotlib ``Figure`` (None when no trial has an objective); ImportError
    without matplotlib."""
    # a Figure of its own, without pyplot: no window, and the backend of a notebook's inline
    # plots stays as it was
    from matplotlib.figure import Figure

    points = [(record, _plotted_value(record)) for record in records]
    points = [(record, value) for record, value in points if value is not None]
    if not points:
        return None
    names = sorted({name for record, _ in points for name in record.hyperparameters})
    width = 4 * (1 + len(names))
    figure = Figure(figsize=(width, 3.5))
    # fixed margins in inches (room for the tick labels and axis names): tight_layout measures
    # every text box and took longer than drawing the figure
    figure.subplots_adjust(left=0.7 / width, right=1 - 0.15 / width, bottom=0.16, top=0.86, wspace=0.3)
    axes = figure.subplots(1, 1 + len(names), squeeze=False)
    label = "objective" if len(directions) == 1 else "objective[0]"
    _scatter(axes[0][0], [int(i) for i in range(len(points))], points, "trial", label)
    for axis, name in zip(axes[0][1:], names):
        present = [(record, value) for record, value in points if name in record.hyperparameters]
        xs = [record.hyperparameters[name] for record, _ in present]
        if any(isinstance(x, (str, bool)) for x in xs):
            xs = [str(x) for x in xs]
        _scatter(axis, xs, present, name, label)
        if name == "learning_rate" and all(isinstance(x, float) and x > 0 for x in xs):
            _log_axis(axis)
    figure.suptitle(f"hyperparameter search: {len(records)} trials ({', '.join(directions)})")
    return figure


def _log_axis(axis) -> None:
    """A log-scale x axis labelled in plain text ("1e-04"): matplotlib's default labels go through
    its math-text renderer, whose first use made the first plot of a process take 0.30-0.31 s against
    0.16-0.19 s (later plots: 0.15 s either way)."""
    from matplotlib.ticker import LogFormatter

    axis.set_xscale("log")
    axis.xaxis.set_major_formatter(LogFormatter())
    # as matplotlib's own minor labels: shown when the axis spans few decades
    axis.xaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))


def _plotted_value(record):
    if record.objective:
        return record.objective[0]
    if record.history:  # a pruned or stopped trial: its last reported objective
        return record.history[-1][1][0]
    return None


def _scatter(axis, xs, points, xlabel: str, ylabel: str) -> None:
    colours = [_STATUS_COLOURS.get(record.status, "tab:gray") for record, _ in points]
    axis.scatter(xs, [value for _, value in points], c=colours, s=18)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
