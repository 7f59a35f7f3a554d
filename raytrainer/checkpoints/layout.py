"""Names and places of checkpoints: ``<root>/checkpoint-<step>/``, rotation, and picking the one
to resume from. A checkpoint is written as ``.tmp-checkpoint-<step>-<pid>`` and renamed when
complete, so a folder named ``checkpoint-<step>`` is complete unless something outside raytrainer
damaged it; ``is_complete`` checks the files a resume needs anyway."""

import json
import os
import re
import shutil
import warnings

PREFIX_CHECKPOINT_DIR = "checkpoint"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
TORCH_WEIGHTS_NAME = "pytorch_model.bin"
OPTIMIZER_NAME = "optimizer.pt"
SCHEDULER_NAME = "scheduler.pt"
SCALER_NAME = "scaler.pt"
TRAINER_STATE_NAME = "trainer_state.json"
TRAINING_ARGS_NAME = "training_args.json"
TRAINING_ARGS_BIN_NAME = "training_args.bin"  # torch.save(args), as HF writes it; never loaded here
# a sharded model's checkpoint (raytrainer.parallel): FSDP's DCP folders, DeepSpeed's tag pointer
SHARDED_MODEL_DIR = "pytorch_model_fsdp_0"
SHARDED_OPTIMIZER_DIR = "optimizer_0"
DEEPSPEED_LATEST = "latest"
_CHECKPOINT_RE = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
_TMP_RE = re.compile(rf"^\.tmp-{PREFIX_CHECKPOINT_DIR}-\d+-(\d+)$")


def checkpoint_dir(root: str, step: int) -> str:
    return os.path.join(root, f"{PREFIX_CHECKPOINT_DIR}-{step}")


def temporary_dir(root: str, step: int) -> str:
    return os.path.join(root, f".tmp-{PREFIX_CHECKPOINT_DIR}-{step}-{os.getpid()}")


def step_of(path: str):
    match = _CHECKPOINT_RE.match(os.path.basename(os.path.normpath(path)))
    return int(match.group(1)) if match else None


def sorted_checkpoints(root: str) -> list:
    """``checkpoint-<step>`` folders under ``root``, oldest step first (by number, not mtime)."""
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        path = os.path.join(root, name)
        step = step_of(name)
        if step is not None and os.path.isdir(path):
            found.append((step, path))
    return [path for _, path in sorted(found)]


def has_weights(folder: str) -> bool:
    names = (WEIGHTS_NAME, WEIGHTS_INDEX_NAME, TORCH_WEIGHTS_NAME, os.path.join(SHARDED_MODEL_DIR, ".metadata"),
             DEEPSPEED_LATEST)
    return any(os.path.exists(os.path.join(folder, name)) for name in names)


def _has_optimizer(folder: str) -> bool:
    names = (OPTIMIZER_NAME, os.path.join(SHARDED_OPTIMIZER_DIR, ".metadata"), DEEPSPEED_LATEST)
    return any(os.path.exists(os.path.join(folder, name)) for name in names)


def missing_files(folder: str) -> list:
    """What a checkpoint lacks to be resumed from (an empty list for a complete one)."""
    missing = [] if has_weights(folder) else [WEIGHTS_NAME]
    required = [TRAINER_STATE_NAME]
    if _saved_training_objects(folder):
        required.append(SCHEDULER_NAME)
        missing += [] if _has_optimizer(folder) else [OPTIMIZER_NAME]
    return missing + [name for name in required if not os.path.exists(os.path.join(folder, name))]


def _saved_training_objects(folder: str) -> bool:
    """Whether the run that wrote ``folder`` saved optimizer and scheduler (not save_only_model);
    only raytrainer's training_args.json says so, HF's checkpoints are taken as they are."""
    try:
        with open(os.path.join(folder, TRAINING_ARGS_NAME)) as f:
            return not json.load(f).get("save_only_model", False)
    except (OSError, ValueError):
        return False


def latest_complete_checkpoint(root: str):
    """The newest checkpoint that can be resumed from; broken ones are skipped with a warning."""
    for path in reversed(sorted_checkpoints(root)):
        missing = missing_files(path)
        if not missing:
            return path
        warnings.warn(f"Skipping checkpoint {path}: it lacks {', '.join(missing)} (interrupted or damaged).")
    return None


def rotate_checkpoints(root: str, save_total_limit, best_model_checkpoint=None) -> list:
    """Delete the oldest checkpoints beyond ``save_total_limit``; the best one is never deleted,
    and with a limit of 1 the best and the latest are both kept so training can still resume.
    Returns the deleted paths."""
    if not save_total_limit or save_total_limit <= 0:
        return []
    checkpoints = sorted_checkpoints(root)
    limit = save_total_limit
    best = os.path.abspath(best_model_checkpoint) if best_model_checkpoint else None
    paths = [os.path.abspath(p) for p in checkpoints]
    if best in paths:
        # the best one moves to second-newest, so it survives any limit >= 2
        index = paths.index(best)
        if index < len(paths) - 1:
            checkpoints.insert(len(checkpoints) - 1, checkpoints.pop(index))
            if limit == 1:
                limit = 2
    doomed = checkpoints[: max(0, len(checkpoints) - limit)]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


def remove_stale_temporaries(root: str) -> None:
    """Temporary checkpoint folders of processes that no longer run are what a crash mid-save
    leaves behind; they are never resumed from, so they can go."""
    if not os.path.isdir(root):
        return
    for name in os.listdir(root):
        match = _TMP_RE.match(name)
        if match and not _process_alive(int(match.group(1))):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftovers from an earlier, failed save
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def resolve_resume_checkpoint(output_dir: str, resume_from_checkpoint) -> str:
    """``True`` -> the latest complete checkpoint in ``output_dir``; a path -> that folder,
    checked before any training starts."""
    if resume_from_checkpoint is True:
        path = latest_complete_checkpoint(output_dir)
        if path is None:
            raise ValueError(f"resume_from_checkpoint=True, but {output_dir} holds no complete checkpoint-<step> folder.")
        return path
    path = str(resume_from_checkpoint)
    if not os.path.isdir(path):
        raise ValueError(f"resume_from_checkpoint={path!r} is not a folder.")
    missing = missing_files(path)
    if missing:
        raise ValueError(f"resume_from_checkpoint={path!r} is not a complete Trainer checkpoint: it lacks "
                         f"{', '.join(missing)}.")
    return path
