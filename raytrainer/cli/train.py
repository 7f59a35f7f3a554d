"""``raytrainer train CONFIG [--field value ...]``: one training run from a config file.

It trains, evaluates on the eval dataset (when there is one), saves the model, the final state and
the metrics into ``output_dir`` (as HF's example scripts do), and prints the final metrics and
where the model is.
"""

import os

from ._table import format_mapping
from .build import argument_parser, arguments_class, build_trainer, trainer_class
from .config import TOP_KEYS, load_config

DESCRIPTION = "Train a model described by a YAML or JSON config file."
CONFIG_HELP = "\n".join(f"  {key:<18}{meaning}" for key, meaning in TOP_KEYS.items())
EPILOG = f"""config keys (only 'model' is required):
{CONFIG_HELP}

Flags after CONFIG set TrainingArguments fields, HF style, over the file's 'args:'
(--learning_rate 3e-5 --num_train_epochs 2 --bf16); --help-args lists them.
'module:function' references are imported from the current directory.
Resume with --resume_from_checkpoint PATH (or 'latest')."""


def add_parser(subparsers):
    parser = subparsers.add_parser("train", help="train from a config file", description=DESCRIPTION,
                                   epilog=EPILOG, formatter_class=_raw(), allow_abbrev=False)
    parser.add_argument("config", nargs="?", help="the YAML or JSON config file")
    parser.add_argument("--help-args", action="store_true", help="list the TrainingArguments flags and exit")
    parser.set_defaults(run=run, accepts_overrides=True)
    return parser


def _raw():
    import argparse

    return argparse.RawDescriptionHelpFormatter


def run(namespace, overrides: list) -> int:
    if namespace.help_args:
        return print_argument_help("raytrainer train", namespace.config)
    if namespace.config is None:
        from .build import UsageError

        raise UsageError("give the config file: raytrainer train CONFIG.yaml [--field value ...]")
    config = load_config(namespace.config)
    trainer = build_trainer(config, overrides, "raytrainer train")
    output = trainer.train(resume_from_checkpoint=resume_point(trainer.args.resume_from_checkpoint))
    metrics = dict(output.metrics)
    trainer.save_model()
    trainer.save_metrics("train", output.metrics)
    if trainer.eval_dataset is not None:
        evaluation = trainer.evaluate()
        trainer.save_metrics("eval", evaluation)
        metrics.update(evaluation)
    trainer.save_state()
    print(format_mapping(metrics))
    print(f"model saved to {os.path.abspath(trainer.args.output_dir)}")
    return 0


def resume_point(value):
    """``--resume_from_checkpoint``: a folder, or 'latest'/'true' for the newest in output_dir."""
    if value is None:
        return None
    return True if str(value).lower() in ("latest", "true") else value


def print_argument_help(prog: str, config_path=None) -> int:
    args_class = arguments_class(trainer_class(load_config(config_path))) if config_path else None
    if args_class is None:
        from ..args import TrainingArguments as args_class
    argument_parser(args_class, prog).print_help()
    return 0
