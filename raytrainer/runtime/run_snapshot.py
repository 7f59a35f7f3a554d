"""Ray Train's run snapshot, and why each ``train()`` starts without it.

Ray Train V2 records the checkpoints it was handed in ``checkpoint_manager_snapshot.json`` under
``{storage_path}/{name}``, which by default is ``output_dir``. raytrainer rotates checkpoints
itself (``save_total_limit``) and users delete folders; the next ``TorchTrainer`` with the same
storage then refuses to start ("corrupted run directory"). raytrainer never resumes through that
snapshot across ``train()`` calls: a new driver resumes from the folder that
``resume_from_checkpoint`` names, checked on the driver, and within one call a restarted worker
finds Ray's in-memory record. So a fresh ``train()`` forgets the earlier run's snapshot.
"""

import logging
import os

logger = logging.getLogger("raytrainer")
SNAPSHOT_NAME = "checkpoint_manager_snapshot.json"


def forget_earlier_runs(run_config) -> None:
    """Remove the snapshot an earlier run left in this run's storage folder, if any."""
    import pyarrow.fs

    from ray.train.v2._internal.execution.storage import get_fs_and_path

    storage_path = run_config.storage_path
    if storage_path is None or run_config.name is None:
        return  # Ray picks a fresh default folder: nothing earlier can be there
    filesystem, root = get_fs_and_path(storage_path, run_config.storage_filesystem)
    path = os.path.join(root, run_config.name, SNAPSHOT_NAME)
    if filesystem.get_file_info(path).type == pyarrow.fs.FileType.File:
        filesystem.delete_file(path)
        logger.debug("Removed Ray Train's run snapshot of an earlier run at %s", path)
