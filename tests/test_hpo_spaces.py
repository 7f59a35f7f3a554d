"""Search spaces, presets, hyperparameter casting, objectives, selection and the results table of
hyperparameter_search: pure functions, no Ray instance."""

import csv
import json
import pickle
import textwrap

import optuna
import pytest
from ray import tune

from raytrainer import TrainingArguments
from raytrainer.hpo import BestRun, SearchSpace, TrialRecord, default_compute_objective, load_search_space
from raytrainer.hpo.objective import parse_direction
from raytrainer.hpo.params import apply_hyperparameters
from raytrainer.hpo.presets import available_presets
from raytrainer.hpo.results import table_rows, write_results
from raytrainer.hpo.selection import best_record, pareto_records, scope_value
from raytrainer.hpo.spaces import default_hp_space_optuna, default_hp_space_ray, tune_dict_as_define_by_run

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def args(tmp_path):
    return TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none", disable_tqdm=True)


def _ask(seed=0):
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed)).ask()


# ---------------------------------------------------------------------- objective and direction
def test_default_objective_is_eval_loss_alone_else_sum_of_other_metrics():
    assert default_compute_objective({"eval_loss": 0.5, "epoch": 2.0, "eval_runtime": 3.0,
                                      "eval_samples_per_second": 9.0, "eval_steps_per_second": 1.0}) == 0.5
    metrics = {"eval_loss": 0.5, "eval_accuracy": 0.75, "eval_f1": 0.5, "eval_runtime": 1.0, "epoch": 1.0}
    assert default_compute_objective(metrics) == 1.25
    assert metrics["eval_loss"] == 0.5  # the caller's dict is not changed


def test_direction_parsing_and_errors():
    assert parse_direction("maximize") == ["maximize"]
    assert parse_direction(["minimize", "MAXIMIZE"]) == ["minimize", "maximize"]
    assert parse_direction(optuna.study.StudyDirection.MAXIMIZE) == ["maximize"]
    with pytest.raises(ValueError, match=r"direction 'min' is not valid; use 'minimize' or 'maximize'"):
        parse_direction("min")
    with pytest.raises(ValueError, match="direction is an empty list"):
        parse_direction([])


# ---------------------------------------------------------------------- hyperparameters -> TrainingArguments
def test_hyperparameters_are_cast_to_field_types(args):
    trial_args = apply_hyperparameters(args, {"seed": 3.7, "num_train_epochs": 2, "per_device_train_batch_size": "16",
                                              "lr_scheduler_type": "cosine", "fp16": 0, "warmup_steps": 0.1})
    assert (trial_args.seed, trial_args.per_device_train_batch_size) == (3, 16)
    assert isinstance(trial_args.num_train_epochs, float) and trial_args.num_train_epochs == 2.0
    assert trial_args.lr_scheduler_type == "cosine" and trial_args.fp16 is False and trial_args.warmup_steps == 0.1
    assert trial_args.run_name == args.run_name and args.seed == 42  # the original is untouched


def test_unknown_or_invalid_hyperparameter_is_an_error_naming_it(args):
    with pytest.raises(ValueError, match=r"'learning_rat' is not a field of TrainingArguments; .* Did you mean "
                                         r"'learning_rate'\?"):
        apply_hyperparameters(args, {"learning_rat": 0.1})
    with pytest.raises(ValueError, match=r"'per_device_train_batch_size' got 'many', which is not a valid int"):
        apply_hyperparameters(args, {"per_device_train_batch_size": "many"})
    with pytest.raises(ValueError, match="lr_scheduler_type='bogus' is not a valid SchedulerType") as error:
        apply_hyperparameters(args, {"lr_scheduler_type": "bogus"})
    assert "while applying the trial's hyperparameters" in error.value.__notes__[0]


# ---------------------------------------------------------------------- spaces
def test_default_spaces_match_hf():
    trial = _ask()
    values = default_hp_space_optuna(trial)
    assert set(values) == {"learning_rate", "num_train_epochs", "seed", "per_device_train_batch_size"}
    assert 1e-6 <= values["learning_rate"] <= 1e-4 and 1 <= values["num_train_epochs"] <= 5
    assert values["per_device_train_batch_size"] in (4, 8, 16, 32, 64)
    ray_space = default_hp_space_ray(None)
    assert (ray_space["learning_rate"].lower, ray_space["learning_rate"].upper) == (1e-6, 1e-4)
    assert ray_space["num_train_epochs"].categories == [1, 2, 3, 4, 5]
    assert ray_space["per_device_train_batch_size"].categories == [4, 8, 16, 32, 64]


def test_hf_default_preset_is_the_default_optuna_space():
    preset = load_search_space("hf_default")
    assert {"finetune_small", "from_scratch", "hf_default"} <= set(available_presets())
    first, second = _ask(seed=5), _ask(seed=5)
    assert preset(first) == default_hp_space_optuna(second)  # same suggestions, same order, same values
    tune_space = preset.to_tune()
    assert {name: type(domain).__name__ for name, domain in tune_space.items()} == {
        "learning_rate": "Float", "num_train_epochs": "Integer", "seed": "Integer",
        "per_device_train_batch_size": "Categorical"}
    samples = {tune_space["num_train_epochs"].sample() for _ in range(200)}
    assert samples == {1, 2, 3, 4, 5}  # Tune's exclusive upper bound is accounted for


def test_every_shipped_preset_samples_valid_arguments(args):
    for name in available_presets():
        space = load_search_space(name)
        assert space.description
        apply_hyperparameters(args, space(_ask()))
        apply_hyperparameters(args, {n: d.sample() if hasattr(d, "sample") else d for n, d in space.to_tune().items()})


def test_preset_by_path_with_fixed_and_stepped_values(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(textwrap.dedent("""\
        description: mine
        parameters:
          learning_rate: {type: float, low: 1e-4, high: 1e-2, log: true}
          per_device_train_batch_size: {type: int, low: 8, high: 32, step: 8}
          max_steps: {type: fixed, value: 7}
        """))
    space = load_search_space(str(path))
    assert isinstance(space, SearchSpace) and space.names == ["learning_rate", "per_device_train_batch_size", "max_steps"]
    values = space(_ask(1))
    assert values["max_steps"] == 7 and values["per_device_train_batch_size"] in (8, 16, 24, 32)
    assert 1e-4 <= values["learning_rate"] <= 1e-2
    assert {space.to_tune()["per_device_train_batch_size"].sample() for _ in range(200)} == {8, 16, 24, 32}


@pytest.mark.parametrize("body, message", [
    ("parameters:\n  learning_rate: {type: float, low: 1e-3, high: 1e-4}\n",
     ":2: parameters.learning_rate.high: must be above low (0.001), got 0.0001."),
    ("description: x\nparameters:\n  lerning_rate: {type: float, low: 1, high: 2}\n",
     ":3: parameters.lerning_rate: not a field of TrainingArguments"),
    ("parameters:\n  seed:\n    type: int\n    low: 1\n    high: 4\n    bogus: 3\n",
     ":6: parameters.seed.bogus: not a field of a 'int' parameter; allowed: high, log, low, step, type."),
    ("parameters:\n  seed: {type: integer, low: 1, high: 4}\n",
     ":2: parameters.seed.type: 'integer' is not one of float, int, categorical, fixed."),
    ("parameters:\n  seed: {type: int, low: 1.5, high: 4}\n", ":2: parameters.seed.low: expected an integer, got 1.5."),
    ("parameters:\n  learning_rate: {type: float, low: 0, high: 1, log: true}\n",
     ":2: parameters.learning_rate.low: a log-scaled range needs low > 0, got 0.0."),
    ("parameters:\n  optim:\n    type: categorical\n    choices: []\n",
     ":4: parameters.optim.choices: must be a non-empty list"),
    ("parameters:\n  seed: [1, 2\n", ":3: YAML: expected ',' or ']'"),
    ("description: only\n", ":1: parameters: missing"),
    ("parameter:\n  seed: {type: fixed, value: 1}\n", ":1: parameter: unknown key"),
])
def test_bad_preset_file_names_line_and_field(tmp_path, body, message):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(ValueError) as error:
        load_search_space(str(path))
    assert str(error.value).startswith(f"{path}{message}")


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ValueError, match=r"no search-space preset or file 'nope'\. Presets: .*hf_default"):
        load_search_space("nope")


def test_tune_dict_runs_as_an_optuna_define_by_run_space():
    space = {"learning_rate": tune.loguniform(1e-4, 1e-2), "seed": tune.randint(1, 4),
             "optim": tune.choice(["adamw_torch", "sgd"]), "max_steps": 5}
    trial = _ask(3)
    values = tune_dict_as_define_by_run(space)(trial)
    assert values["max_steps"] == 5 and values["optim"] in ("adamw_torch", "sgd") and 1 <= values["seed"] <= 3
    assert 1e-4 <= values["learning_rate"] <= 1e-2
    assert set(trial.params) == {"learning_rate", "seed", "optim"}  # constants are not suggested


# ---------------------------------------------------------------------- selection and results
def _record(run_id, status, history, objective=None, **extra):
    return TrialRecord(run_id=run_id, run_name=f"run-{run_id}", status=status, objective=objective,
                       history=[(step, [value]) for step, value in history], **extra)


def test_scope_values_as_ray_reads_them():
    history = [(s, [v]) for s, v in enumerate([5.0, 1.0, 4.0, 3.0, 2.0, 6.0], start=1)]
    assert scope_value(history, "last", "minimize") == 6.0
    assert scope_value(history, "all", "minimize") == 1.0 and scope_value(history, "all", "maximize") == 6.0
    assert scope_value(history, "last-5-avg", "minimize") == pytest.approx(16 / 5)
    assert scope_value(history, "last-10-avg", "minimize") == pytest.approx(21 / 6)


def test_best_trial_depends_on_scope_and_skips_pruned_and_failed():
    records = [_record("a", "complete", [(1, 0.5), (2, 3.0)], [3.0]),
               _record("b", "complete", [(1, 2.0), (2, 2.0)], [2.0]),
               _record("c", "pruned", [(1, 0.1)]), _record("d", "failed", [], error="boom"),
               _record("e", "stopped", [(1, 2.5)], [2.5])]
    assert best_record(records, "minimize", "last").run_id == "b"
    assert best_record(records, "minimize", "all").run_id == "a"
    assert best_record(records, "maximize", "last").run_id == "a"


def test_pareto_front_of_two_objectives():
    def rec(run_id, values):
        return TrialRecord(run_id=run_id, run_name=run_id, status="complete", objective=values)

    records = [rec("a", [1.0, 1.0]), rec("b", [2.0, 3.0]), rec("c", [2.0, 0.5]), rec("d", [0.5, 0.5])]
    assert [r.run_id for r in pareto_records(records, ["minimize", "maximize"])] == ["a", "b", "d"]
    assert [r.run_id for r in pareto_records(records, ["minimize", "minimize"])] == ["d"]


def test_results_plot_labels_a_learning_rate_axis_in_plain_text():
    pytest.importorskip("matplotlib")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from raytrainer.hpo.plot import results_figure

    def labels(rates):
        records = [_record(str(i), "complete", [(2, 0.1 * i)], [0.1 * i], hyperparameters={"learning_rate": rate})
                   for i, rate in enumerate(rates)]
        figure = results_figure(records, ["minimize"])
        FigureCanvasAgg(figure).draw()
        axis = figure.axes[1]
        assert axis.get_xlabel() == "learning_rate" and axis.get_xscale() == "log"
        low, high = axis.get_xlim()
        ticks = axis.get_xticklabels() + axis.get_xticklabels(minor=True)
        shown = sorted((label.get_position()[0], label.get_text()) for label in ticks
                       if label.get_text() and low <= label.get_position()[0] <= high)
        return [text.replace("\u2212", "-") for _, text in shown]  # matplotlib's minus sign

    # decades are labelled without math text (its renderer cost 0.16 s of the first plot)
    assert labels([2e-5, 3e-4, 2e-2]) == ["1e-04", "1e-03", "1e-02"]
    # an axis within one decade still gets labels, on its minor ticks
    assert labels([1.2e-4, 3.5e-4]) == ["2e-04", "3e-04"]


def test_best_run_is_hf_four_tuple_with_checkpoint():
    best = BestRun("7", 0.25, {"learning_rate": 0.1}, None, checkpoint="/x/run-7/checkpoint-4",
                   checkpoint_metrics={"eval_loss": 0.25})
    run_id, objective, hyperparameters, summary = best
    assert (run_id, objective, hyperparameters, summary) == ("7", 0.25, {"learning_rate": 0.1}, None)
    assert best == ("7", 0.25, {"learning_rate": 0.1}, None)
    restored = pickle.loads(pickle.dumps(best))
    assert restored.checkpoint == "/x/run-7/checkpoint-4" and restored.checkpoint_metrics == {"eval_loss": 0.25}


def test_results_table_csv_json_and_plot(tmp_path):
    records = [_record("0", "complete", [(2, 0.5), (4, 0.25)], [0.25], hyperparameters={"learning_rate": 0.1},
                       checkpoint="/c/4", global_step=4, train_runtime=1.5, wall_time=2.0),
               _record("1", "pruned", [(2, 0.9)], hyperparameters={"learning_rate": 0.001}, global_step=2,
                       error="TrialPruned: pruned at step 2")]
    paths = write_results(str(tmp_path), records, ["minimize"])
    with open(paths["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert [(r["run_id"], r["status"], r["objective"], r["hp_learning_rate"], r["evaluations"]) for r in rows] == [
        ("0", "complete", "0.25", "0.1", "2"), ("1", "pruned", "", "0.001", "1")]
    assert rows[0]["train_runtime"] == "1.5" and rows[1]["error"] == "TrialPruned: pruned at step 2"
    with open(paths["json"]) as f:
        data = json.load(f)
    assert data["directions"] == ["minimize"] and data["trials"][0]["history"] == [[2, [0.5]], [4, [0.25]]]
    assert TrialRecord.from_dict(data["trials"][0]).overhead == pytest.approx(0.5)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert paths["png"] is None
    else:
        with open(paths["png"], "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    two = table_rows([TrialRecord("0", "run-0", "complete", objective=[1.0, 2.0])], ["minimize", "maximize"])
    assert (two[0]["objective_0"], two[0]["objective_1"]) == (1.0, 2.0)


def test_trial_lines_print_each_finished_trial_once_with_its_status(capsys):
    """The quiet Ray Tune console: Tune asks its progress reporter after every step of its loop."""
    from types import SimpleNamespace

    from ray.tune.experiment import Trial

    from raytrainer.hpo.backends.tune_lines import TrialLines

    def trial(trial_id, status, objective=None):
        result = {"step": 12, "objective": objective} if objective is not None else {}
        return SimpleNamespace(trial_id=trial_id, status=status, last_result=result, config={"lr": trial_id})

    lines = TrialLines(lambda config: {"learning_rate": config["lr"]})
    restored = trial("old", Trial.TERMINATED, 0.5)  # ended before this run: a restored search's
    running = [restored, trial("a", Trial.RUNNING), trial("b", Trial.PENDING)]
    assert not lines.should_report(running)
    step = [restored, trial("a", Trial.TERMINATED, 0.25), trial("b", Trial.RUNNING)]
    assert lines.should_report(step)
    lines.report(step, False)
    assert not lines.should_report(step)  # printed once
    end = [restored, trial("a", Trial.TERMINATED, 0.25), trial("b", Trial.ERROR)]
    assert lines.should_report(end, done=True)
    lines.report(end, True)
    assert capsys.readouterr().out.splitlines() == [
        "trial a complete at step 12: objective=0.25 (learning_rate=a)",
        "trial b failed at step ?: no objective (learning_rate=b)"]
