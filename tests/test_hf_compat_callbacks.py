"""Callback behaviours the spec documents: early stopping without load_best_model_at_end (v5) and its
check_metric_value override point, the warnings HF gives, stateful callbacks on resume, and
CallbackHandler.call_event. Where transformers is installed, the same run is made with it."""

import inspect
import logging
import os

import pytest
from _hf_models import transformers_log_messages
from conftest import RegressionDataset, RegressionModel

from raytrainer import (
    CallbackHandler,
    DefaultFlowCallback,
    EarlyStoppingCallback,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
)
from raytrainer.state import ExportableState


def _scripted(values):
    """compute_metrics returning the next scripted score at each evaluation."""
    scores = iter(values)
    return lambda prediction: {"score": next(scores)}


def _early_stopping_run(library, tmp_path, callback, values, **overrides):
    settings = dict(output_dir=str(tmp_path / library.__name__), report_to="none", disable_tqdm=True,
                    save_strategy="no", max_steps=10, eval_strategy="steps", eval_steps=1, logging_steps=1,
                    metric_for_best_model="score", greater_is_better=False, per_device_train_batch_size=4)
    settings.update(overrides)
    trainer = library.Trainer(model=RegressionModel(), args=library.TrainingArguments(**settings),
                              train_dataset=RegressionDataset(16), eval_dataset=RegressionDataset(4),
                              compute_metrics=_scripted(values), callbacks=[callback])
    return trainer.train().global_step


def _libraries():
    import raytrainer

    libraries = [raytrainer]
    try:
        import transformers
    except ImportError:
        return libraries
    return libraries + [transformers]


SCORES = [0.5, 0.4, 0.45, 0.41, 0.42, 0.3, 0.3, 0.3, 0.3, 0.3]


@pytest.mark.parametrize("library", _libraries(), ids=lambda m: m.__name__)
def test_early_stopping_without_load_best_model_at_end(tmp_path, caplog, library):
    callback = library.EarlyStoppingCallback(early_stopping_patience=2)
    with caplog.at_level(logging.WARNING):
        steps = _early_stopping_run(library, tmp_path, callback, SCORES)
    # 0.5 first; 0.4 better; 0.45 and 0.41 are not: two evaluations without improvement at step 4
    assert steps == 4 and callback.early_stopping_patience_counter == 2
    if library.__name__ == "raytrainer":
        assert ("Using EarlyStoppingCallback without load_best_model_at_end=True: once training stops, the model "
                "keeps its last weights, not those of the best evaluation.") in caplog.messages


def test_early_stopping_still_needs_a_metric(make_args):
    with pytest.raises(ValueError, match="EarlyStoppingCallback needs TrainingArguments.metric_for_best_model"):
        Trainer(model=RegressionModel(), args=make_args(eval_strategy="steps", eval_steps=1),
                train_dataset=RegressionDataset(8), eval_dataset=RegressionDataset(4),
                callbacks=[EarlyStoppingCallback()])


@pytest.mark.parametrize("library", _libraries(), ids=lambda m: m.__name__)
def test_check_metric_value_is_the_override_point(tmp_path, library):
    class StopAboveTarget(library.EarlyStoppingCallback):
        """No improvement unless the score is below an absolute target."""

        def check_metric_value(self, args, state, control, metric_value):
            if metric_value < 0.35:
                self.early_stopping_patience_counter = 0
            else:
                self.early_stopping_patience_counter += 1

    callback = StopAboveTarget(early_stopping_patience=3)
    assert _early_stopping_run(library, tmp_path, callback, [0.5, 0.3, 0.4, 0.4, 0.4, 0.1, 0.1, 0.1, 0.1, 0.1]) == 5


def test_check_metric_value_default_rule():
    callback = EarlyStoppingCallback(early_stopping_patience=2, early_stopping_threshold=0.1)
    args = type("Args", (), {"greater_is_better": True, "metric_for_best_model": "accuracy"})()
    state, control = TrainerState(best_metric=0.5), TrainerControl()
    callback.check_metric_value(args, state, control, 0.55)  # better, but by less than the threshold
    assert callback.early_stopping_patience_counter == 1
    callback.check_metric_value(args, state, control, 0.7)
    assert callback.early_stopping_patience_counter == 0


# --------------------------------------------------------------------------- warnings

def test_a_second_callback_of_a_class_is_reported(make_args, caplog):
    with caplog.at_level(logging.WARNING, logger="raytrainer"):
        trainer = Trainer(model=RegressionModel(), args=make_args(), callbacks=[DefaultFlowCallback()])
    assert any(m.startswith("A DefaultFlowCallback is already among the callbacks; adding a second one. Current "
                            "callbacks:\nDefaultFlowCallback") for m in caplog.messages)
    assert trainer.callback_handler.callback_list.count("DefaultFlowCallback") == 2
    transformers = pytest.importorskip("transformers")
    hf_messages = transformers_log_messages(lambda: transformers.trainer_callback.CallbackHandler(
        [transformers.DefaultFlowCallback, transformers.DefaultFlowCallback], None, None, None, None))
    assert any("but there is already one" in message for message in hf_messages)


def test_training_without_default_flow_is_reported(make_args, caplog):
    trainer = Trainer(model=RegressionModel(), args=make_args(max_steps=3), train_dataset=RegressionDataset(16))
    trainer.remove_callback(DefaultFlowCallback)
    with caplog.at_level(logging.WARNING, logger="raytrainer"):
        trainer.train()
    assert any(m.startswith("No DefaultFlowCallback among the callbacks: the loop will never log, evaluate, save or "
                            "stop on its own.") for m in caplog.messages)
    # nothing raised should_log: only the end-of-training summary is in the history
    assert [sorted(e) for e in trainer.state.log_history if "loss" in e] == []
    transformers = pytest.importorskip("transformers")
    hf_messages = transformers_log_messages(lambda: transformers.trainer_callback.CallbackHandler(
        [transformers.PrinterCallback], None, None, None, None))
    assert any("if you don't have a `DefaultFlowCallback`" in message for message in hf_messages)


# --------------------------------------------------------------------------- stateful callbacks

class StepCounter(TrainerCallback, ExportableState):
    """Counts optimizer steps, ``per_step`` at a time; its state is saved in checkpoints."""

    def __init__(self, name: str, per_step: int = 1):
        self.name, self.per_step, self.count = name, per_step, 0

    def on_step_end(self, args, state, control, **kwargs):
        self.count += self.per_step

    def state(self) -> dict:
        return {"args": {"name": self.name, "per_step": self.per_step}, "attributes": {"count": self.count}}


def _resumable_args(make_args, **overrides):
    return make_args(max_steps=2, save_strategy="steps", save_steps=2, restore_callback_states_from_checkpoint=True,
                     **overrides)


def test_several_instances_of_a_stateful_callback_get_their_own_state(make_args):
    args = _resumable_args(make_args)
    Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(16),
            callbacks=[StepCounter("a", 1), StepCounter("b", 10)]).train()
    args.max_steps = 3
    b, a = StepCounter("b", 10), StepCounter("a", 1)  # listed in the other order this time
    Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(16), callbacks=[b, a]).train(
        resume_from_checkpoint=os.path.join(args.output_dir, "checkpoint-2"))
    assert (a.count, b.count) == (3, 30)  # 2 + 1 and 20 + 10: each got its own counter back


def test_fewer_instances_restore_what_they_can_and_say_so(make_args, caplog):
    args = _resumable_args(make_args)
    Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(16),
            callbacks=[StepCounter("a", 1), StepCounter("b", 10)]).train()
    args.max_steps = 3
    b = StepCounter("b", 10)
    with caplog.at_level(logging.WARNING, logger="raytrainer"):
        Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(16), callbacks=[b]).train(
            resume_from_checkpoint=os.path.join(args.output_dir, "checkpoint-2"))
    assert b.count == 30
    assert ("The checkpoint holds 2 StepCounter states but this run has 1 StepCounter callback(s); 1 state(s) were "
            "not restored.") in caplog.messages


def test_a_checkpointed_callback_the_new_run_lacks_is_reported(make_args, caplog):
    args = _resumable_args(make_args)
    Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(16),
            callbacks=[StepCounter("a")]).train()
    args.max_steps = 3
    with caplog.at_level(logging.WARNING, logger="raytrainer"):
        Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(16)).train(
            resume_from_checkpoint=os.path.join(args.output_dir, "checkpoint-2"))
    assert ("The checkpoint holds the state of callbacks this run does not have, so it is ignored: StepCounter. Add "
            "those callbacks to the Trainer to restore them.") in caplog.messages


# --------------------------------------------------------------------------- call_event

def test_call_event_dispatches_with_the_handler_objects():
    seen = []

    class Listener(TrainerCallback):
        def on_log(self, args, state, control, logs=None, model=None, **kwargs):
            seen.append((logs, model))
            control.should_save = True
            return control

    class Recording(CallbackHandler):
        events = []

        def call_event(self, event, args, state, control, **kwargs):
            self.events.append(event)
            return super().call_event(event, args, state, control, **kwargs)

    model = RegressionModel()
    handler = Recording([DefaultFlowCallback(), Listener()], model, None, None, None)
    control = handler.call_event("on_log", None, TrainerState(), TrainerControl(), logs={"loss": 1.0})
    assert control.should_save is True and seen == [({"loss": 1.0}, model)]
    handler.on_step_begin(None, TrainerState(), TrainerControl())  # the on_* methods go through it
    assert Recording.events == ["on_log", "on_step_begin"]
    transformers = pytest.importorskip("transformers")
    assert list(inspect.signature(transformers.trainer_callback.CallbackHandler.call_event).parameters) == \
        list(inspect.signature(CallbackHandler.call_event).parameters)
