"""A line per finished trial of an Optuna sweep, as the Ray backend prints them
(``hpo.trial_lines``)."""


def optuna_trial_lines():
    """An Optuna study callback (``study.optimize(callbacks=[...])``)."""
    from ..hpo.trial_lines import trial_line

    def on_trial_finished(study, trial):
        values = trial.values or []
        step = max(trial.intermediate_values) if trial.intermediate_values else None
        if not values and step is not None:  # pruned: its last reported objective
            values = [trial.intermediate_values[step]]
        names = ["objective"] if len(values) == 1 else [f"objective_{i}" for i in range(len(values))]
        print(trial_line(trial.number, trial.state.name.lower(), step, dict(zip(names, values)), trial.params),
              flush=True)

    return on_trial_finished
