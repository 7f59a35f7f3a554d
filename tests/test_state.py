import json
import os
from types import SimpleNamespace

import numpy as np
import pytest

from raytrainer.callbacks.early_stopping import EarlyStoppingCallback
from raytrainer.callbacks.flow import DefaultFlowCallback
from raytrainer.state import ExportableState, TrainerControl, TrainerState

HF_STATE_KEYS = {
    "epoch", "global_step", "max_steps", "logging_steps", "eval_steps", "save_steps",
    "train_batch_size", "num_train_epochs", "num_input_tokens_seen", "total_flos", "log_history",
    "best_metric", "best_global_step", "best_model_checkpoint", "is_local_process_zero",
    "is_world_process_zero", "is_hyper_param_search", "trial_name", "trial_params",
    "stateful_callbacks",
}


def test_defaults_match_hf():
    state = TrainerState()
    assert (state.epoch, state.global_step, state.max_steps) == (None, 0, 0)
    assert (state.logging_steps, state.eval_steps, state.save_steps) == (500, 500, 500)
    assert state.log_history == [] and state.stateful_callbacks == {}
    assert state.is_local_process_zero is True and state.is_world_process_zero is True
    assert state.is_hyper_param_search is False
    assert state.best_metric is None and state.best_global_step is None
    # each instance gets its own list: mutating one must not leak into another
    state.log_history.append({"loss": 1.0})
    assert TrainerState().log_history == []


def test_json_round_trip_layout_and_key_set(tmp_path):
    state = TrainerState(
        epoch=1.5, global_step=12, max_steps=24, train_batch_size=8, num_train_epochs=3,
        total_flos=123.0, log_history=[{"loss": 0.5, "step": 10}], best_metric=0.25,
        best_global_step=10, best_model_checkpoint="out/checkpoint-10", trial_params={"lr": 0.1},
    )
    path = tmp_path / "trainer_state.json"
    state.save_to_json(path)
    text = path.read_text()
    data = json.loads(text)
    assert set(data) == HF_STATE_KEYS
    assert text.endswith("}\n")
    assert list(data) == sorted(data)  # sort_keys
    assert '\n  "best_global_step": 10,\n' in text  # indent=2
    assert os.listdir(tmp_path) == ["trainer_state.json"]  # no temporary file left behind
    assert TrainerState.load_from_json(path) == state


def test_save_overwrites_existing_file(tmp_path):
    path = tmp_path / "trainer_state.json"
    TrainerState(global_step=1).save_to_json(path)
    TrainerState(global_step=2).save_to_json(str(path))
    assert json.loads(path.read_text())["global_step"] == 2
    assert os.listdir(tmp_path) == ["trainer_state.json"]


def test_numpy_scalars_in_logs_are_saved_as_numbers(tmp_path):
    path = tmp_path / "s.json"
    TrainerState(log_history=[{"loss": np.float32(0.5), "step": np.int64(3)}]).save_to_json(path)
    assert json.loads(path.read_text())["log_history"] == [{"loss": 0.5, "step": 3}]


def test_unserialisable_value_names_its_type(tmp_path):
    with pytest.raises(TypeError, match="holds a value of type object"):
        TrainerState(trial_params={"x": object()}).save_to_json(tmp_path / "s.json")
    assert os.listdir(tmp_path) == []


def test_load_ignores_unknown_keys_and_defaults_missing_ones(tmp_path):
    path = tmp_path / "trainer_state.json"
    path.write_text(json.dumps({"global_step": 7, "future_field": [1, 2], "max_steps": 9}))
    state = TrainerState.load_from_json(path)
    assert (state.global_step, state.max_steps, state.best_global_step) == (7, 9, None)
    assert not hasattr(state, "future_field")


def test_load_rejects_non_object(tmp_path):
    path = tmp_path / "trainer_state.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"holds a list, not a JSON object"):
        TrainerState.load_from_json(path)


def test_compute_steps_turns_ratios_into_step_counts():
    state = TrainerState()
    args = SimpleNamespace(logging_steps=0.1, eval_steps=0.25, save_steps=6)
    state.compute_steps(args, max_steps=13)
    # ceil(13 * 0.1) = 2, ceil(13 * 0.25) = 4, ints are kept
    assert (state.logging_steps, state.eval_steps, state.save_steps) == (2, 4, 6)
    assert state.max_steps == 0  # compute_steps only resolves the intervals


def test_compute_steps_keeps_current_value_for_none():
    state = TrainerState(eval_steps=42)
    state.compute_steps(SimpleNamespace(logging_steps=5, eval_steps=None, save_steps=0.5), 3)
    assert (state.logging_steps, state.eval_steps, state.save_steps) == (5, 42, 2)


def test_compute_steps_ratio_needs_max_steps():
    args = SimpleNamespace(logging_steps=0.1, eval_steps=None, save_steps=10)
    with pytest.raises(ValueError, match=r"logging_steps=0.1 is a fraction of max_steps, but max_steps=0"):
        TrainerState().compute_steps(args, max_steps=0)


def test_stateful_callbacks_list_is_exported_by_class_name():
    first, second = EarlyStoppingCallback(2), EarlyStoppingCallback(3, 0.5)
    second.early_stopping_patience_counter = 1
    control = TrainerControl(should_save=True)
    state = TrainerState(stateful_callbacks=[first, control, second])
    assert state.stateful_callbacks == {
        "EarlyStoppingCallback": [
            {"args": {"early_stopping_patience": 2, "early_stopping_threshold": 0.0},
             "attributes": {"early_stopping_patience_counter": 0}},
            {"args": {"early_stopping_patience": 3, "early_stopping_threshold": 0.5},
             "attributes": {"early_stopping_patience_counter": 1}},
        ],
        "TrainerControl": {
            "args": {"should_training_stop": False, "should_epoch_stop": False,
                     "should_save": True, "should_evaluate": False, "should_log": False},
            "attributes": {},
        },
    }


def test_stateful_callbacks_reject_non_exportable():
    message = "contains a DefaultFlowCallback, which does not inherit ExportableState"
    with pytest.raises(TypeError, match=message):
        TrainerState(stateful_callbacks=[DefaultFlowCallback()])


def test_control_resets():
    control = TrainerControl(True, True, True, True, True)
    control._new_step()
    assert (control.should_save, control.should_evaluate, control.should_log) == (False, False, False)
    assert (control.should_training_stop, control.should_epoch_stop) == (True, True)
    control._new_epoch()
    assert (control.should_training_stop, control.should_epoch_stop) == (True, False)
    control._new_training()
    assert control == TrainerControl()


def test_control_state_round_trip():
    control = TrainerControl(should_training_stop=True, should_log=True)
    restored = TrainerControl.from_state(control.state())
    assert restored == control and restored is not control


def test_from_state_sets_attributes_after_construction():
    callback = EarlyStoppingCallback.from_state(
        {"args": {"early_stopping_patience": 4}, "attributes": {"early_stopping_patience_counter": 3}}
    )
    assert (callback.early_stopping_patience, callback.early_stopping_patience_counter) == (4, 3)


def test_from_state_rejects_malformed_input():
    with pytest.raises(ValueError, match="expected a dict with the keys 'args' and 'attributes'"):
        TrainerControl.from_state({"should_log": True})


def test_exportable_state_without_state_method_explains_itself():
    class Incomplete(ExportableState):
        pass

    message = "Incomplete inherits ExportableState but does not define state"
    with pytest.raises(NotImplementedError, match=message):
        Incomplete().state()
