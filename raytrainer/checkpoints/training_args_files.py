"""The arguments of a run, saved beside its weights: ``training_args.json`` (read by raytrainer to
tell how a checkpoint was written) and ``training_args.bin``, the ``torch.save`` of the arguments
object that HF's checkpoint layout has and tools look for. raytrainer never loads the ``.bin``:
unpickling it would run code, and everything a resume needs is in the JSON and the state."""

import copy
import dataclasses
import os

import torch

from .layout import TRAINING_ARGS_BIN_NAME, TRAINING_ARGS_NAME


def write_training_args(args, folder: str) -> None:
    with open(os.path.join(folder, TRAINING_ARGS_NAME), "w") as f:
        f.write(args.to_json_string())
    torch.save(_without_secrets(args), os.path.join(folder, TRAINING_ARGS_BIN_NAME))


def _without_secrets(args):
    """A shallow copy whose ``*_token`` fields are empty: checkpoints get shared, tokens must not
    travel with them (the JSON masks them too). Copying skips ``__post_init__``: no re-validation."""
    cleaned = copy.copy(args)
    for item in dataclasses.fields(args):
        if item.name.endswith("_token"):
            setattr(cleaned, item.name, None)
    return cleaned
