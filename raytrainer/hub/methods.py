"""The Hub methods of ``Trainer``, with HF's names and signatures.

``push_to_hub=True`` creates (or finds) the repository when the Trainer is built, so a Hub that
cannot be reached, or a token it refuses, fails before any training. During training, rank 0
pushes each save in the background (``hub_strategy``, see ``pusher``); the end of training waits
for those uploads. Checkpoints of hyperparameter-search trials are not pushed (every trial would
overwrite the same repository): push the chosen model afterwards with ``trainer.push_to_hub()``.
"""

import logging
import os

from ..enums import HubStrategy
from .api import create_repo, hub_api, hub_error
from .model_card import as_list, build_model_card
from .pusher import IGNORED_IN_OUTPUT_DIR, HubPusher

logger = logging.getLogger("raytrainer")


class HubMethods:
    """Mixed into ``Trainer``: ``init_hf_repo``, ``create_model_card``, ``push_to_hub``."""

    hub_model_id = None  # "namespace/name" of the repository, once init_hf_repo has run
    _hub_pusher = None

    def init_hf_repo(self, token=None, private=None) -> None:
        """Create the repository ``args.hub_model_id`` (default: the name of ``output_dir``) if it
        does not exist. ``token``/``private`` default to ``args.hub_token``/``args.hub_private_repo``."""
        if not self.is_world_process_zero():
            return
        name = self.args.hub_model_id or os.path.basename(os.path.abspath(self.args.output_dir))
        token = token if token is not None else self.args.hub_token
        private = private if private is not None else self.args.hub_private_repo
        self.hub_model_id = create_repo(name, token, private)
        self._hub_pusher = HubPusher(self.hub_model_id)

    def create_model_card(self, language=None, license=None, tags=None, model_name=None, finetuned_from=None,
                          tasks=None, dataset_tags=None, dataset=None, dataset_args=None) -> None:
        """Write a draft model card to ``output_dir/README.md`` from what the Trainer knows."""
        if not self.is_world_process_zero():
            return
        card = build_model_card(self, language=language, license=license, tags=tags, model_name=model_name,
                                finetuned_from=finetuned_from, tasks=tasks, dataset_tags=dataset_tags,
                                dataset=dataset, dataset_args=dataset_args)
        os.makedirs(self.args.output_dir, exist_ok=True)
        card.save(os.path.join(self.args.output_dir, "README.md"))

    def push_to_hub(self, commit_message="End of training", blocking: bool = True, token=None, revision=None,
                    private=None, **kwargs):
        """Save the model to ``output_dir``, write its model card and upload the folder (checkpoint
        folders left out) to ``hub_model_id``. Returns the ``CommitInfo``, or with
        ``blocking=False`` a ``Future`` of it. ``kwargs`` go to ``create_model_card``."""
        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        model_name = kwargs.pop("model_name", None)
        if model_name is None and self.args.should_save:
            model_name = (self.args.hub_model_id.split("/")[-1] if self.args.hub_model_id
                          else os.path.basename(os.path.abspath(self.args.output_dir)))
        token = token if token is not None else self.args.hub_token
        if self.hub_model_id is None:
            self.init_hf_repo(token=token, private=private)
        self._finish_current_push()  # a background upload must not read files save_model rewrites
        self.save_model(_internal_call=True)
        if not self.is_world_process_zero():
            return None
        model_tags = getattr(self.model, "model_tags", None)
        if model_tags:
            kwargs["tags"] = list(dict.fromkeys(as_list(kwargs.get("tags")) + list(model_tags)))
        self.create_model_card(model_name=model_name, **kwargs)
        try:
            return hub_api().upload_folder(
                repo_id=self.hub_model_id, folder_path=self.args.output_dir, commit_message=commit_message,
                token=token, run_as_future=not blocking, ignore_patterns=IGNORED_IN_OUTPUT_DIR,
                revision=revision if revision is not None else self.args.hub_revision,
            )
        except Exception as error:  # noqa: BLE001 - translated into one clear error, token scrubbed
            raise hub_error(error, f"upload {self.args.output_dir}", token) from None

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """After each save: start the background push ``hub_strategy`` asks for."""
        if (not self.args.push_to_hub or self._hub_pusher is None or not self.is_world_process_zero()
                or self.args.hub_strategy == HubStrategy.END):
            return
        if self.state.is_hyper_param_search:
            if not getattr(self, "_warned_trial_push", False):
                self._warned_trial_push = True
                logger.info("push_to_hub: checkpoints of hyperparameter-search trials are not pushed; push the "
                            "chosen model with trainer.push_to_hub() after the search.")
            return
        self._hub_pusher.push_checkpoint(self, checkpoint_folder)

    def _finish_current_push(self) -> None:
        """Wait for the background uploads (and push a final save that was skipped while one ran)."""
        if self._hub_pusher is not None:
            self._hub_pusher.finish(self)
