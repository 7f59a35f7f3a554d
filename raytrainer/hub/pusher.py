"""Pushing checkpoints to the Hub in the background while training goes on.

At each save (``hub_strategy`` other than ``"end"``) the model files of the new checkpoint are
copied to the top of ``output_dir`` and that folder is uploaded (checkpoint folders and names
starting with ``_`` left out); ``"checkpoint"`` also uploads the checkpoint as
``last-checkpoint/`` (resume with ``resume_from_checkpoint="last-checkpoint"`` after a download),
``"all_checkpoints"`` as ``checkpoint-<step>/``. Uploads run in ``huggingface_hub``'s background
worker, one after the other; while one is still running a new save is not pushed unless
``hub_always_push`` is set. Training waits for the uploads at its end, and a save that was
skipped because an upload was running is pushed then, so the Hub ends with the final model.
"""

import logging
import os
import shutil
from concurrent import futures

from ..checkpoints.layout import PREFIX_CHECKPOINT_DIR
from ..enums import HubStrategy, SaveStrategy
from .api import hub_api, hub_error, model_files

logger = logging.getLogger("raytrainer")
# never uploaded from output_dir: private files, checkpoints, and checkpoints being written
IGNORED_IN_OUTPUT_DIR = ["_*", f"{PREFIX_CHECKPOINT_DIR}-*", f".tmp-{PREFIX_CHECKPOINT_DIR}-*"]


class HubPusher:
    """The uploads of one Trainer (HF's ``push_in_progress``)."""

    def __init__(self, repo_id: str):
        self.repo_id = repo_id
        self.jobs = []  # futures of the uploads started and not yet waited for
        self.skipped = None  # a checkpoint folder not pushed because an upload was running
        self._api = None  # one client: its single background worker runs the uploads in order

    def is_busy(self) -> bool:
        return any(not job.done() for job in self.jobs)

    def push_checkpoint(self, trainer, folder: str) -> None:
        """Start the uploads for the checkpoint just saved in ``folder``."""
        args = trainer.args
        message = _commit_message(args, trainer.state)
        if self.is_busy() and not args.hub_always_push:
            self.skipped = folder
            return
        self.skipped = None
        self._report_failures(args.hub_token, wait=False)
        trainer.callback_handler.on_push_begin(args, trainer.state, trainer.control)
        _stage_model_files(folder, args.output_dir, trainer.processing_class)
        self._api = self._api or hub_api()
        api = self._api
        common = dict(repo_id=self.repo_id, token=args.hub_token, revision=args.hub_revision, run_as_future=True)
        self.jobs.append(api.upload_folder(folder_path=args.output_dir, commit_message=message,
                                           ignore_patterns=IGNORED_IN_OUTPUT_DIR, **common))
        if args.hub_strategy in (HubStrategy.CHECKPOINT, HubStrategy.ALL_CHECKPOINTS):
            path_in_repo = "last-checkpoint" if args.hub_strategy == HubStrategy.CHECKPOINT else os.path.basename(folder)
            self.jobs.append(api.upload_folder(folder_path=folder, path_in_repo=path_in_repo,
                                               commit_message=f"{message}, checkpoint", **common))

    def finish(self, trainer) -> None:
        """Wait for the uploads; push a save that was skipped meanwhile (still on disk), and wait again."""
        token = trainer.args.hub_token
        self._report_failures(token, wait=True)
        if self.skipped is not None and os.path.isdir(self.skipped):
            self.push_checkpoint(trainer, self.skipped)
            self._report_failures(token, wait=True)
        self.skipped = None

    def wait(self, token=None) -> None:
        self._report_failures(token, wait=True)

    def _report_failures(self, token, wait: bool) -> None:
        if wait and self.jobs:
            logger.info("Waiting for the uploads to the Hub to finish.")
            futures.wait(self.jobs)
        for job in [job for job in self.jobs if job.done()]:
            self.jobs.remove(job)
            if job.exception() is not None:
                # the checkpoint stays on disk; training goes on, the next push uploads the newer one
                logger.error("An upload to the Hub failed: %s", hub_error(job.exception(), "upload", token))

    def __getstate__(self):
        return {"repo_id": self.repo_id, "jobs": [], "skipped": None, "_api": None}  # futures do not pickle


def _commit_message(args, state) -> str:
    if args.save_strategy == SaveStrategy.STEPS:
        return f"Training in progress, step {state.global_step}"
    return f"Training in progress, epoch {int(state.epoch or 0)}"


def _stage_model_files(checkpoint_folder: str, output_dir: str, processing_class) -> None:
    """Copy the checkpoint's model files to ``output_dir`` (each replaced in one rename, so an
    upload that is still reading the previous file keeps reading a whole one)."""
    os.makedirs(output_dir, exist_ok=True)
    for name in model_files(checkpoint_folder):
        temporary = os.path.join(output_dir, f"_{name}.tmp")  # "_*" is never uploaded
        shutil.copyfile(os.path.join(checkpoint_folder, name), temporary)
        os.replace(temporary, os.path.join(output_dir, name))
    if callable(getattr(processing_class, "save_pretrained", None)):
        processing_class.save_pretrained(output_dir)
