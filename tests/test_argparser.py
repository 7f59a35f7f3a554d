"""HfArgumentParser: argv, args files, dicts, JSON and YAML into dataclasses."""

import argparse
import dataclasses
import enum
import json
import sys
from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from raytrainer.argparser import HfArgumentParser
from raytrainer.args import Seq2SeqTrainingArguments, TrainingArguments
from raytrainer.enums import FSDPOption, IntervalStrategy, SchedulerType


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass
class ModelArguments:
    model_name: str = field(metadata={"help": "Which model to load."})
    hidden: int = 16
    dropout: Optional[float] = None
    colour: Colour = Colour.RED
    mode: Literal["fast", "exact", 3] = "fast"
    layers: list[int] = field(default_factory=lambda: [1, 2])
    extra: dict = field(default_factory=dict)
    tied: bool = True
    frozen: bool = False
    maybe: Optional[bool] = None


@dataclass
class Tiny:
    size: int = 1


def parse_training(argv):
    (args,) = HfArgumentParser(TrainingArguments).parse_args_into_dataclasses(
        argv, look_for_args_file=False
    )
    return args


# --------------------------------------------------------------------------- argv


def test_scalar_options_in_both_spellings():
    args = parse_training(
        ["--learning_rate", "3e-5", "--num-train-epochs", "2", "--per_device_train_batch_size", "4"]
    )
    assert (args.learning_rate, args.num_train_epochs, args.per_device_train_batch_size) == (3e-5, 2.0, 4)
    assert type(args.per_device_train_batch_size) is int


def test_enum_options_are_restricted_to_their_values(capsys):
    args = parse_training(["--eval_strategy", "steps", "--lr_scheduler_type", "cosine"])
    assert args.eval_strategy is IntervalStrategy.STEPS
    assert args.lr_scheduler_type is SchedulerType.COSINE
    with pytest.raises(SystemExit):
        parse_training(["--eval_strategy", "sometimes"])
    assert "invalid choice 'sometimes' (choose from no, steps, epoch)" in capsys.readouterr().err


@pytest.mark.parametrize("argv, expected", [
    (["--fp16"], True),
    (["--fp16", "true"], True),
    (["--fp16", "yes"], True),
    (["--fp16", "1"], True),
    (["--fp16", "False"], False),
    (["--fp16", "no"], False),
    (["--fp16", "0"], False),
    ([], False),
])
def test_bool_flags(argv, expected):
    assert parse_training(argv).fp16 is expected


def test_bool_flag_rejects_other_words(capsys):
    with pytest.raises(SystemExit):
        parse_training(["--fp16", "maybe"])
    assert "expected a boolean (true/false, yes/no, 1/0), got 'maybe'" in capsys.readouterr().err


def test_no_prefix_for_true_defaults():
    assert parse_training(["--no_remove_unused_columns"]).remove_unused_columns is False
    assert parse_training(["--no-save-safetensors"]).save_safetensors is False
    assert parse_training(["--remove_unused_columns", "false"]).remove_unused_columns is False
    assert parse_training([]).remove_unused_columns is True
    with pytest.raises(ValueError, match=r"unrecognised arguments \['--no_fp16'\]"):
        parse_training(["--no_fp16"])  # only True-default booleans get a --no_ form


def test_list_optional_and_json_options():
    args = parse_training([
        "--report_to", "none",
        "--include_for_metrics", "inputs", "loss",
        "--label_names", "start_positions", "end_positions",
        "--fsdp", "full_shard", "auto_wrap",
        "--lr_scheduler_kwargs", '{"num_cycles": 3}',
        "--eval_accumulation_steps", "4",
        "--warmup_steps", "0.1",
        "--logging_steps", "50",
    ])
    assert args.report_to == []
    assert args.include_for_metrics == ["inputs", "loss"]
    assert args.label_names == ["start_positions", "end_positions"]
    assert args.fsdp == [FSDPOption.FULL_SHARD, FSDPOption.AUTO_WRAP]
    assert args.lr_scheduler_kwargs == {"num_cycles": 3}
    assert args.eval_accumulation_steps == 4
    assert args.warmup_steps == 0.1
    assert args.logging_steps == 50 and type(args.logging_steps) is int


def test_quoted_fsdp_options_are_split():
    assert parse_training(["--fsdp", "shard_grad_op offload"]).fsdp == [
        FSDPOption.SHARD_GRAD_OP, FSDPOption.OFFLOAD,
    ]


def test_invalid_values_are_reported_by_the_dataclass():
    with pytest.raises(ValueError, match=r"per_device_train_batch_size must be an integer >= 1, got 0"):
        parse_training(["--per_device_train_batch_size", "0"])


def test_custom_dataclass_types():
    parser = HfArgumentParser(ModelArguments)
    (model,) = parser.parse_args_into_dataclasses(
        ["--model_name", "tiny", "--dropout", "0.1", "--colour", "blue", "--mode", "3",
         "--layers", "4", "5", "6", "--extra", '{"k": [1]}', "--no_tied", "--maybe", "false"],
        look_for_args_file=False,
    )
    assert model == ModelArguments(
        model_name="tiny", dropout=0.1, colour=Colour.BLUE, mode=3, layers=[4, 5, 6],
        extra={"k": [1]}, tied=False, maybe=False,
    )
    (defaults,) = parser.parse_args_into_dataclasses(["--model_name", "x"], look_for_args_file=False)
    assert (defaults.dropout, defaults.layers, defaults.maybe, defaults.tied) == (None, [1, 2], None, True)


def test_custom_choices_and_json_errors(capsys):
    parser = HfArgumentParser(ModelArguments)
    with pytest.raises(SystemExit):
        parser.parse_args(["--model_name", "x", "--mode", "slow"])
    assert "invalid choice 'slow' (choose from fast, exact, 3)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["--model_name", "x", "--extra", "[1]"])
    assert "expected a JSON object" in capsys.readouterr().err


def test_required_field_is_required(capsys):
    with pytest.raises(SystemExit):
        HfArgumentParser(ModelArguments).parse_args_into_dataclasses([], look_for_args_file=False)
    assert "the following arguments are required: --model_name" in capsys.readouterr().err


def test_several_dataclasses_and_remaining_strings():
    parser = HfArgumentParser([ModelArguments, Seq2SeqTrainingArguments])
    model, training, rest = parser.parse_args_into_dataclasses(
        ["--model_name", "t5", "--predict_with_generate", "--seed", "3", "--unknown", "1"],
        return_remaining_strings=True, look_for_args_file=False,
    )
    assert model.model_name == "t5"
    assert isinstance(training, Seq2SeqTrainingArguments)
    assert (training.predict_with_generate, training.seed) == (True, 3)
    assert rest == ["--unknown", "1"]


def test_unknown_argv_is_an_error():
    with pytest.raises(ValueError, match=r"unrecognised arguments \['--lerning_rate', '1'\]"):
        parse_training(["--lerning_rate", "1"])


def test_options_added_by_user_come_back_as_namespace():
    parser = HfArgumentParser(Tiny)
    parser.add_argument("--verbose", action="store_true")
    tiny, extra = parser.parse_args_into_dataclasses(["--size", "4", "--verbose"], look_for_args_file=False)
    assert tiny == Tiny(size=4)
    assert extra == argparse.Namespace(verbose=True)


def test_help_shows_field_help_and_both_spellings():
    text = HfArgumentParser([ModelArguments, TrainingArguments]).format_help()
    assert "Which model to load." in text
    assert "Initial learning rate." in text
    assert "--learning_rate LEARNING_RATE, --learning-rate LEARNING_RATE" in text


# --------------------------------------------------------------------------- args files


def test_args_filename_is_read_before_the_command_line(tmp_path):
    path = tmp_path / "run.args"
    path.write_text("--learning_rate 0.1  # a comment\n--seed 5\n")
    (args,) = HfArgumentParser(TrainingArguments).parse_args_into_dataclasses(
        ["--seed", "9"], args_filename=str(path)
    )
    assert (args.learning_rate, args.seed) == (0.1, 9)


def test_args_file_flag(tmp_path):
    first, second = tmp_path / "a.args", tmp_path / "b.args"
    first.write_text("--seed 1 --max_steps 10")
    second.write_text("--seed 2")
    (args,) = HfArgumentParser(TrainingArguments).parse_args_into_dataclasses(
        ["--args_file", str(first), "--args_file", str(second)],
        look_for_args_file=False, args_file_flag="--args_file",
    )
    assert (args.seed, args.max_steps) == (2, 10)


def test_script_args_file_found_next_to_script(tmp_path, monkeypatch):
    script = tmp_path / "train.py"
    (tmp_path / "train.args").write_text("--size 7")
    monkeypatch.setattr(sys, "argv", [str(script)])
    (tiny,) = HfArgumentParser(Tiny).parse_args_into_dataclasses()
    assert tiny.size == 7
    (tiny,) = HfArgumentParser(Tiny).parse_args_into_dataclasses(look_for_args_file=False)
    assert tiny.size == 1


def test_missing_named_args_file_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=r"args_filename: file .*nope.args' does not exist"):
        HfArgumentParser(Tiny).parse_args_into_dataclasses([], args_filename=tmp_path / "nope.args")


# --------------------------------------------------------------------------- dict / json / yaml


def test_parse_dict_and_unknown_keys():
    parser = HfArgumentParser([ModelArguments, Tiny])
    model, tiny = parser.parse_dict({"model_name": "m", "size": 3, "tied": False})
    assert (model.model_name, model.tied, tiny.size) == ("m", False, 3)
    with pytest.raises(ValueError, match=r"unknown keys \['bogus', 'sise'\].*allow_extra_keys=True"):
        parser.parse_dict({"model_name": "m", "sise": 3, "bogus": 1})
    model, tiny = parser.parse_dict({"model_name": "m", "sise": 3}, allow_extra_keys=True)
    assert tiny.size == 1


def test_parse_dict_converts_text_of_typed_fields():
    parser = HfArgumentParser(TrainingArguments)
    (args,) = parser.parse_dict(
        {"learning_rate": "5e-5", "fp16": "yes", "max_steps": "10", "eval_strategy": "epoch"}
    )
    assert (args.learning_rate, args.fp16, args.max_steps) == (5e-5, True, 10)
    assert args.eval_strategy is IntervalStrategy.EPOCH
    with pytest.raises(ValueError, match=r"max_steps='ten' cannot be converted"):
        parser.parse_dict({"max_steps": "ten"})
    with pytest.raises(TypeError, match="parse_dict expects a dict"):
        parser.parse_dict([("seed", 1)])


def test_parse_json_file(tmp_path):
    path = tmp_path / "args.json"
    path.write_text(json.dumps({"output_dir": "out", "seed": 11, "report_to": ["none"]}))
    (args,) = HfArgumentParser(TrainingArguments).parse_json_file(str(path))
    assert (args.output_dir, args.seed, args.report_to) == ("out", 11, [])
    path.write_text(json.dumps({"seed": 11, "typo_field": 1}))
    with pytest.raises(ValueError, match=r"unknown keys \['typo_field'\]"):
        HfArgumentParser(TrainingArguments).parse_json_file(path)
    (args,) = HfArgumentParser(TrainingArguments).parse_json_file(path, allow_extra_keys=True)
    assert args.seed == 11


def test_parse_yaml_file(tmp_path):
    path = tmp_path / "args.yaml"
    path.write_text(
        "learning_rate: 3e-5\nnum_train_epochs: 1\nfsdp: full_shard auto_wrap\n"
        "lr_scheduler_kwargs:\n  num_cycles: 2\n"
    )
    (args,) = HfArgumentParser(TrainingArguments).parse_yaml_file(path)
    assert args.learning_rate == 3e-5  # YAML reads 3e-5 as text; the parser converts it
    assert args.num_train_epochs == 1
    assert args.fsdp == [FSDPOption.FULL_SHARD, FSDPOption.AUTO_WRAP]
    assert args.lr_scheduler_kwargs == {"num_cycles": 2}


def test_files_must_hold_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match=r"must contain a mapping .* got list"):
        HfArgumentParser(Tiny).parse_yaml_file(path)
    with pytest.raises(ValueError, match=r"json_file: file .*missing.json' does not exist"):
        HfArgumentParser(Tiny).parse_json_file(tmp_path / "missing.json")


# --------------------------------------------------------------------------- construction


def test_constructor_rejects_non_dataclasses_and_clashes():
    with pytest.raises(TypeError, match=r"dataclass_types must be dataclass types .*got Tiny\(size=1\)"):
        HfArgumentParser(Tiny())
    with pytest.raises(TypeError, match=r"got <class 'int'>"):
        HfArgumentParser([Tiny, int])

    @dataclass
    class AlsoSeed:
        seed: int = 0

    with pytest.raises(ValueError, match=r"field 'seed' is defined by both TrainingArguments and AlsoSeed"):
        HfArgumentParser([TrainingArguments, AlsoSeed])


def test_every_training_field_has_an_option():
    parser = HfArgumentParser(TrainingArguments)
    destinations = {action.dest for action in parser._actions}
    assert {f.name for f in dataclasses.fields(TrainingArguments)} <= destinations
