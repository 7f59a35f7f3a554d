import logging
from types import SimpleNamespace

import pytest

from raytrainer.callbacks import (
    DEFAULT_CALLBACKS,
    DEFAULT_PROGRESS_CALLBACK,
    CallbackHandler,
    DefaultFlowCallback,
    EarlyStoppingCallback,
    PrinterCallback,
    ProgressCallback,
    TrainerCallback,
    epoch_end_decisions,
    format_logs,
    progress_callback_class,
    step_end_decisions,
)
from raytrainer.enums import IntervalStrategy, SaveStrategy
from raytrainer.state import TrainerControl, TrainerState

EVENTS = [
    "on_init_end", "on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
    "on_step_begin", "on_pre_optimizer_step", "on_optimizer_step", "on_substep_end", "on_step_end",
    "on_evaluate", "on_predict", "on_save", "on_log", "on_prediction_step", "on_push_begin",
]
HANDLER_KEYWORDS = {
    "model", "processing_class", "optimizer", "lr_scheduler", "train_dataloader", "eval_dataloader",
}


def flow_args(**overrides):
    values = dict(
        logging_strategy="steps", logging_steps=3, logging_first_step=True,
        eval_strategy="steps", eval_steps=4, eval_delay=5,
        save_strategy="steps", save_steps=6,
    )
    values.update(overrides)
    return SimpleNamespace(**values)


def make_handler(callbacks=(DefaultFlowCallback,)):
    return CallbackHandler(list(callbacks), "model", "tokenizer", "optimizer", "scheduler")


# step -> (should_log, should_evaluate, should_save, should_training_stop) with
# logging_steps=3 + logging_first_step, eval_steps=4 + eval_delay=5, save_steps=6, max_steps=13
STEP_TABLE = {
    1: (True, False, False, False), 2: (False, False, False, False),
    3: (True, False, False, False), 4: (False, False, False, False),
    5: (False, False, False, False), 6: (True, False, True, False),
    7: (False, False, False, False), 8: (False, True, False, False),
    9: (True, False, False, False), 10: (False, False, False, False),
    11: (False, False, False, False), 12: (True, True, True, False),
    13: (False, True, True, True),  # the last step is evaluated off the grid too (HF v5)
}


def test_step_flags_through_the_handler_follow_the_table():
    args, handler = flow_args(), make_handler()
    state, control = TrainerState(max_steps=13), TrainerControl()
    state.compute_steps(args, max_steps=13)
    seen = {}
    for step in range(1, 14):
        control = handler.on_step_begin(args, state, control)
        state.global_step = step
        control = handler.on_step_end(args, state, control)
        seen[step] = (control.should_log, control.should_evaluate, control.should_save,
                      control.should_training_stop)
    assert seen == STEP_TABLE


def test_step_end_decisions_pure_function_matches_table():
    args = flow_args()
    for step, expected in STEP_TABLE.items():
        state = TrainerState(global_step=step, max_steps=13, logging_steps=3, eval_steps=4, save_steps=6)
        assert tuple(step_end_decisions(args, state)) == expected, step


def test_enum_strategies_compare_like_strings():
    args = flow_args(logging_strategy=IntervalStrategy.STEPS, eval_strategy=IntervalStrategy.STEPS,
                     save_strategy=SaveStrategy.STEPS)
    state = TrainerState(global_step=12, max_steps=13, logging_steps=3, eval_steps=4, save_steps=6)
    assert tuple(step_end_decisions(args, state)) == (True, True, True, False)


def test_step_end_without_strategies_only_stops():
    args = flow_args(logging_strategy="no", logging_first_step=False, eval_strategy="epoch",
                     save_strategy="best")
    for step, expected_stop in ((1, False), (12, False), (13, True), (14, True)):
        state = TrainerState(global_step=step, max_steps=13, logging_steps=3, eval_steps=4, save_steps=6)
        assert tuple(step_end_decisions(args, state)) == (False, False, False, expected_stop)


def test_zero_save_steps_never_saves_before_the_end():
    state = TrainerState(global_step=6, max_steps=13, logging_steps=3, eval_steps=4, save_steps=0)
    assert step_end_decisions(flow_args(), state).save is False


def test_epoch_end_decisions():
    args = flow_args(logging_strategy="epoch", eval_strategy="epoch", save_strategy="epoch", eval_delay=2)
    assert tuple(epoch_end_decisions(args, TrainerState(epoch=1.0))) == (True, False, True)
    assert tuple(epoch_end_decisions(args, TrainerState(epoch=2.0))) == (True, True, True)
    steps_args = flow_args(eval_delay=0)
    assert tuple(epoch_end_decisions(steps_args, TrainerState(epoch=3.0))) == (False, False, False)


def test_flow_callback_only_raises_flags():
    control = TrainerControl(should_log=True, should_save=True)
    args = flow_args(logging_strategy="no", save_strategy="no", eval_strategy="epoch", eval_delay=0)
    returned = DefaultFlowCallback().on_epoch_end(args, TrainerState(epoch=1.0), control)
    assert returned is control
    assert (control.should_log, control.should_evaluate, control.should_save) == (True, True, True)


class Recorder(TrainerCallback):
    def __init__(self, name, journal):
        self.name, self.journal = name, journal

    def __getattribute__(self, attribute):
        if attribute in EVENTS:
            def record(args, state, control, **kwargs):
                self.journal.append((self.name, attribute, kwargs))
            return record
        return super().__getattribute__(attribute)


def test_handler_calls_every_event_on_each_callback_in_order_with_kwargs():
    journal = []
    handler = make_handler([DefaultFlowCallback, Recorder("a", journal), Recorder("b", journal)])
    handler.train_dataloader, handler.eval_dataloader = "train_dl", "eval_dl"
    args, state = flow_args(), TrainerState()
    for event in EVENTS:
        extra = {"metrics": {"eval_loss": 1.0}} if event in ("on_evaluate", "on_predict") else {}
        extra = {"logs": {"loss": 2.0}} if event == "on_log" else extra
        getattr(handler, event)(args, state, TrainerControl(), **extra)
    assert [(name, event) for name, event, _ in journal] == [
        (name, event) for event in EVENTS for name in ("a", "b")
    ]
    for _, event, kwargs in journal:
        assert {key: kwargs[key] for key in HANDLER_KEYWORDS} == {
            "model": "model", "processing_class": "tokenizer", "optimizer": "optimizer",
            "lr_scheduler": "scheduler", "train_dataloader": "train_dl", "eval_dataloader": "eval_dl",
        }
        extra_keys = set(kwargs) - HANDLER_KEYWORDS
        expected = {"on_evaluate": {"metrics"}, "on_predict": {"metrics"}, "on_log": {"logs"}}
        assert extra_keys == expected.get(event, set()), event
    metrics_seen = [kw["metrics"] for _, ev, kw in journal if ev == "on_evaluate"]
    assert metrics_seen == [{"eval_loss": 1.0}, {"eval_loss": 1.0}]


def test_handler_resets_flags_before_calling_callbacks():
    handler, args, state = make_handler(), flow_args(), TrainerState()
    cases = [
        ("on_train_begin", {}, "should_training_stop"),
        ("on_epoch_begin", {}, "should_epoch_stop"),
        ("on_evaluate", {"metrics": {}}, "should_evaluate"),
        ("on_save", {}, "should_save"),
        ("on_log", {"logs": {}}, "should_log"),
    ]
    for event, extra, flag in cases:
        control = getattr(handler, event)(args, state, TrainerControl(True, True, True, True, True), **extra)
        cleared = {name for name, value in vars(control).items() if not value}
        assert cleared == {flag}, event
    control = handler.on_step_begin(args, state, TrainerControl(True, True, True, True, True))
    assert vars(control) == {"should_training_stop": True, "should_epoch_stop": True,
                             "should_save": False, "should_evaluate": False, "should_log": False}


class Replacer(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        return TrainerControl(should_training_stop=True)


class Observer(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        self.received = control


def test_returned_control_replaces_control_for_later_callbacks():
    observer = Observer()
    handler = make_handler([DefaultFlowCallback, Replacer, observer])
    original = TrainerControl()
    result = handler.on_step_end(flow_args(), TrainerState(global_step=2, max_steps=13), original)
    assert result is observer.received and result is not original
    assert result == TrainerControl(should_training_stop=True)


def test_callback_returning_wrong_type_is_reported():
    class Bad(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            return True

    handler = make_handler([DefaultFlowCallback, Bad])
    message = r"Bad.on_save returned a bool; an event must return None or a TrainerControl"
    with pytest.raises(TypeError, match=message):
        handler.on_save(flow_args(), TrainerState(), TrainerControl())


def test_add_pop_remove_and_callback_list(caplog):
    handler = make_handler([DefaultFlowCallback, PrinterCallback])
    printer = handler.callbacks[1]
    handler.add_callback(EarlyStoppingCallback(3))
    assert handler.callback_list == "DefaultFlowCallback\nPrinterCallback\nEarlyStoppingCallback"
    assert handler.pop_callback(PrinterCallback) is printer
    assert handler.pop_callback(PrinterCallback) is None
    assert handler.pop_callback(PrinterCallback()) is None  # another instance does not match
    early = handler.callbacks[1]
    handler.remove_callback(early)
    assert handler.callback_list == "DefaultFlowCallback"
    handler.remove_callback(ProgressCallback)  # absent: silently ignored
    assert [type(cb) for cb in handler.callbacks] == [DefaultFlowCallback]


def test_pop_by_class_matches_subclasses_first_in_order():
    class LoudPrinter(PrinterCallback):
        pass

    handler = make_handler([DefaultFlowCallback, LoudPrinter, PrinterCallback])
    assert type(handler.pop_callback(PrinterCallback)) is LoudPrinter
    assert type(handler.pop_callback(PrinterCallback)) is PrinterCallback


def test_duplicate_callback_warns_with_current_list(caplog):
    handler = make_handler([DefaultFlowCallback, PrinterCallback])
    with caplog.at_level(logging.WARNING, logger="raytrainer.callbacks.base"):
        handler.add_callback(PrinterCallback())
    assert caplog.messages == [
        "A PrinterCallback is already among the callbacks; adding a second one. "
        "Current callbacks:\nDefaultFlowCallback\nPrinterCallback"
    ]
    assert len(handler.callbacks) == 3


def test_handler_without_flow_callback_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="raytrainer.callbacks.base"):
        make_handler([PrinterCallback])
    assert len(caplog.messages) == 1
    assert caplog.messages[0].startswith("No DefaultFlowCallback among the callbacks")
    assert caplog.messages[0].endswith("Current callbacks:\nPrinterCallback")


def test_add_callback_rejects_non_callbacks():
    handler = make_handler()
    with pytest.raises(TypeError, match="callback=dict is not a TrainerCallback subclass"):
        handler.add_callback(dict)
    with pytest.raises(TypeError, match="callback='x' is a str, not a TrainerCallback"):
        handler.add_callback("x")


def test_defaults_exported():
    assert DEFAULT_CALLBACKS == [DefaultFlowCallback]
    assert DEFAULT_PROGRESS_CALLBACK is ProgressCallback
    assert progress_callback_class(SimpleNamespace(disable_tqdm=True)) is PrinterCallback
    assert progress_callback_class(SimpleNamespace(disable_tqdm=False)) is ProgressCallback


def test_base_callback_events_are_no_ops():
    callback, control = TrainerCallback(), TrainerControl()
    for event in EVENTS:
        assert getattr(callback, event)(None, TrainerState(), control, model=None) is None
    assert control == TrainerControl()


def early_args(**overrides):
    values = dict(load_best_model_at_end=True, metric_for_best_model="accuracy",
                  greater_is_better=True, eval_strategy="steps")
    values.update(overrides)
    return SimpleNamespace(**values)


def run_evaluations(callback, args, values, metric_key, greater):
    """Feed evaluations like the loop does: on_evaluate sees the previous best, then best updates."""
    state, control, trace = TrainerState(), TrainerControl(), []
    for value in values:
        callback.on_evaluate(args, state, control, metrics={metric_key: value, "epoch": 1.0})
        trace.append((callback.early_stopping_patience_counter, control.should_training_stop))
        if state.best_metric is None or (value > state.best_metric if greater else value < state.best_metric):
            state.best_metric = value
    return trace


def test_early_stopping_greater_is_better_with_threshold():
    callback = EarlyStoppingCallback(early_stopping_patience=2, early_stopping_threshold=0.1)
    trace = run_evaluations(callback, early_args(), [0.5, 0.55, 0.7, 0.75, 0.7], "eval_accuracy", True)
    # 0.5 first -> 0; +0.05 not > 0.1 -> 1; +0.2 -> 0; +0.05 -> 1; worse -> 2 = patience: stop
    assert trace == [(0, False), (1, False), (0, False), (1, False), (2, True)]


def test_early_stopping_lower_is_better_inferred_from_loss_name():
    callback = EarlyStoppingCallback(early_stopping_patience=3)
    args = early_args(metric_for_best_model="eval_loss", greater_is_better=None)
    trace = run_evaluations(callback, args, [1.0, 0.8, 0.8, 0.9, 0.7, 0.75, 0.71, 0.7], "eval_loss", False)
    # equal is not better; the counter resets only on a strict improvement
    assert trace == [(0, False), (0, False), (1, False), (2, False), (0, False),
                     (1, False), (2, False), (3, True)]


def test_early_stopping_explicit_lower_is_better_for_other_metric():
    callback = EarlyStoppingCallback(early_stopping_patience=1)
    args = early_args(metric_for_best_model="perplexity", greater_is_better=False)
    assert run_evaluations(callback, args, [5.0, 4.0, 4.5], "eval_perplexity", False) == [
        (0, False), (0, False), (1, True)
    ]


def test_early_stopping_missing_metric_warns_once_and_skips(caplog):
    callback = EarlyStoppingCallback(early_stopping_patience=1)
    state, control = TrainerState(best_metric=0.9), TrainerControl()
    with caplog.at_level(logging.WARNING, logger="raytrainer.callbacks.early_stopping"):
        for _ in range(2):
            callback.on_evaluate(early_args(), state, control, metrics={"eval_loss": 0.1})
    assert caplog.messages == [
        "Early stopping is skipped while metric_for_best_model is missing: it resolves to "
        "'eval_accuracy', which is not among the evaluation metrics ['eval_loss']. Check "
        "metric_for_best_model against the keys returned by compute_metrics."
    ]
    assert callback.early_stopping_patience_counter == 0 and control.should_training_stop is False


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"metric_for_best_model": None}, "needs metric_for_best_model to know what to watch"),
        (
            {"eval_strategy": IntervalStrategy.NO},
            "eval_strategy='no'; set eval_strategy to 'steps' or 'epoch'",
        ),
    ],
)
def test_early_stopping_checks_arguments_at_train_begin(overrides, message):
    with pytest.raises(ValueError, match=message):
        EarlyStoppingCallback().on_train_begin(early_args(**overrides), TrainerState(), TrainerControl())
    assert EarlyStoppingCallback().on_train_begin(early_args(), TrainerState(), TrainerControl()) is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"early_stopping_patience": 0}, r"early_stopping_patience=0 must be an int >= 1"),
        ({"early_stopping_patience": 2.0}, r"early_stopping_patience=2.0 must be an int >= 1"),
        ({"early_stopping_threshold": -0.1}, r"early_stopping_threshold=-0.1 must be a number >= 0"),
    ],
)
def test_early_stopping_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EarlyStoppingCallback(**kwargs)


def test_early_stopping_state_round_trip():
    callback = EarlyStoppingCallback(4, 0.25)
    callback.early_stopping_patience_counter = 2
    restored = EarlyStoppingCallback.from_state(callback.state())
    assert (restored.early_stopping_patience, restored.early_stopping_threshold,
            restored.early_stopping_patience_counter) == (4, 0.25, 2)


LOGS = {"loss": 0.123456, "learning_rate": 5e-05, "epoch": 0.3333, "total_flos": 1e12, "note": "x" * 10}


def test_format_logs():
    assert format_logs(LOGS, max_str_len=5) == (
        "{'loss': 0.1235, 'learning_rate': 5e-05, 'epoch': 0.33, "
        "'note': 'xxxxx... [10 chars; raise max_str_len to see all]'}"
    )
    assert format_logs({"step": 3, "note": "short"}, max_str_len=5) == "{'step': 3, 'note': 'short'}"


def test_progress_callback_training_bar_and_logs(capsys):
    callback, args, control = ProgressCallback(max_str_len=5), flow_args(), TrainerControl()
    state = TrainerState(max_steps=4)
    callback.on_train_begin(args, state, control)
    bar = callback.training_bar
    assert bar.total == 4
    for step in (1, 3):  # a jump of two steps advances the bar by two
        state.global_step = step
        callback.on_step_end(args, state, control)
    assert bar.n == 3
    callback.on_log(args, state, control, logs=dict(LOGS))
    state.global_step = 4
    callback.on_step_end(args, state, control)
    callback.on_train_end(args, state, control)
    captured = capsys.readouterr()
    assert captured.out == (
        "{'loss': 0.1235, 'learning_rate': 5e-05, 'epoch': 0.33, "
        "'note': 'xxxxx... [10 chars; raise max_str_len to see all]'}\n"
    )
    assert "4/4" in captured.err  # the bar itself goes to stderr, also without a tty
    assert callback.training_bar is None and bar.n == 4


def test_progress_callback_prediction_bar(capsys):
    callback, args, control, state = ProgressCallback(), flow_args(), TrainerControl(), TrainerState()
    loader = [0, 1, 2]
    for _ in range(2):
        callback.on_prediction_step(args, state, control, eval_dataloader=loader)
    bar = callback.prediction_bar
    assert (bar.total, bar.n, bar.leave) == (3, 2, True)
    callback.on_evaluate(args, state, control, metrics={})
    assert callback.prediction_bar is None
    callback.on_prediction_step(args, state, control, eval_dataloader=iter(loader))  # no len()
    assert callback.prediction_bar is None
    callback.on_prediction_step(args, state, control, eval_dataloader=loader)
    callback.on_predict(args, state, control, metrics={})
    assert callback.prediction_bar is None
    assert "2/3" in capsys.readouterr().err


def test_progress_callback_is_silent_off_world_zero(capsys):
    callback, args, control = ProgressCallback(), flow_args(), TrainerControl()
    state = TrainerState(max_steps=2, is_world_process_zero=False)
    callback.on_train_begin(args, state, control)
    callback.on_prediction_step(args, state, control, eval_dataloader=[1])
    callback.on_log(args, state, control, logs={"loss": 1.0})
    assert (callback.training_bar, callback.prediction_bar) == (None, None)
    assert capsys.readouterr() == ("", "")


def test_progress_callback_rejects_bad_max_str_len():
    with pytest.raises(ValueError, match=r"max_str_len=0 must be a positive int"):
        ProgressCallback(max_str_len=0)


def test_printer_callback(capsys):
    logs = {"loss": 0.5, "total_flos": 3.0, "step": 2}
    PrinterCallback().on_log(flow_args(), TrainerState(), TrainerControl(), logs=logs)
    other_rank = TrainerState(is_local_process_zero=False)
    PrinterCallback().on_log(flow_args(), other_rank, TrainerControl(), logs=logs)
    assert capsys.readouterr().out == "{'loss': 0.5, 'step': 2}\n"
    assert logs == {"loss": 0.5, "total_flos": 3.0, "step": 2}  # the caller's dict is untouched


def test_a_notebook_is_recognised_by_its_kernel_and_a_script_does_not_import_ipython(monkeypatch):
    import sys
    import types

    from raytrainer.callbacks.notebook import in_notebook

    class ZMQInteractiveShell:  # what a Jupyter kernel's shell is called
        pass

    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    assert in_notebook() is False and "IPython" not in sys.modules
    for shell, expected in ((ZMQInteractiveShell(), True), (object(), False), (None, False)):
        monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda shell=shell: shell))
        assert in_notebook() is expected


def test_notebook_table_rows_per_evaluation_and_live_updates():
    from raytrainer.callbacks import NotebookProgressCallback

    frames = []

    def fake_display(markup, handle):
        frames.append(markup)
        return "handle"

    callback = NotebookProgressCallback(display=fake_display, min_interval=0.0)
    args = SimpleNamespace(eval_strategy="steps")
    state = SimpleNamespace(is_world_process_zero=True, max_steps=4, global_step=0, epoch=0.0)
    callback.on_train_begin(args, state, None)
    for step in (1, 2):
        state.global_step, state.epoch = step, step / 4
        callback.on_step_end(args, state, None)
    callback.on_log(args, state, None, logs={"loss": 0.5, "learning_rate": 0.1})
    callback.on_log(args, state, None, logs={"eval_loss": 0.25, "eval_accuracy": 0.75, "eval_runtime": 0.1})
    last = frames[-1]
    assert "<progress value='2' max='4'" in last
    assert "<th>Validation Loss</th><th>Accuracy</th>" in last and "Runtime" not in last
    assert "<td>2</td><td>0.500000</td><td>0.500000</td><td>0.250000</td><td>0.750000</td>" in last
    assert len(frames) == 5  # begin, two steps, two logs: every change is drawn (min_interval 0)
    # an evaluate() after training belongs to no training row: the finished table stays as it was
    callback.on_train_end(args, state, None)
    finished = frames[-1]
    callback.on_log(args, state, None, logs={"eval_loss": 0.2, "eval_accuracy": 0.8, "eval_runtime": 0.1})
    assert frames[-1] == finished and finished.count("<tr><td>") == 1


def test_preemption_checks_are_spaced_in_time_and_sigterm_saves_then_stops(monkeypatch):
    import ray.train

    from raytrainer.runtime.preemption import PreemptionCallback
    from raytrainer.state import TrainerControl

    calls = []
    monkeypatch.setattr(ray.train, "get_preemption_info", lambda: calls.append(1))
    clock = iter([0.0, 1.0, 2.0])  # 1 s for the first 10 steps -> 0.1 s per step
    monkeypatch.setattr("raytrainer.runtime.preemption.time.monotonic", lambda: next(clock))
    callback = PreemptionCallback(interval_seconds=5.0, first_check=10)
    args = SimpleNamespace(world_size=1, device="cpu")
    control = TrainerControl()
    for step in range(1, 60):
        callback.on_step_end(args, SimpleNamespace(global_step=step), control)
    assert len(calls) == 1 and callback.next_check == 60  # 5 s at 0.1 s per step = 50 steps later
    callback.sigterm_received = True
    callback.on_step_end(args, SimpleNamespace(global_step=60), control)
    assert control.should_save
    with pytest.raises(SystemExit, match="SIGTERM received; checkpoint-60 saved"):
        callback.on_save(args, SimpleNamespace(global_step=60), control)
