"""Where a finished checkpoint folder goes.

``LocalSink`` (a run in this process, with or without Ray Train's local mode, which does not
persist checkpoints): the staging folder is renamed into ``output_dir`` directly.
``RayStorageSink`` (Ray Train workers): every rank stages its files in a temporary folder and
hands it to ``ray.train.report(..., checkpoint_dir_name="checkpoint-<step>")``; Ray merges the
ranks' folders into its storage (``RunConfig.storage_path``/``name``, which by default *is*
``output_dir``).
"""

import os
import shutil
import tempfile

from .layout import checkpoint_dir, remove_stale_temporaries, temporary_dir

RUN_ID_NAME = ".raytrainer-run"  # which train() call wrote a checkpoint (see runtime.worker)


class LocalSink:
    def __init__(self, root: str):
        self.root = root

    def stage(self, step: int, writes_shared: bool) -> str:
        staging = temporary_dir(self.root, step)
        if writes_shared:
            remove_stale_temporaries(self.root)
            shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging, exist_ok=True)
        return staging

    def commit(self, staging: str, step: int, metrics: dict, writes_shared: bool) -> str:
        final = checkpoint_dir(self.root, step)
        if os.path.exists(final):  # a folder of the same step from an earlier run: replace it whole
            shutil.rmtree(final)
        os.replace(staging, final)
        return final


class RayStorageSink:
    """Checkpoints through Ray Train's storage; ``root`` is the experiment folder when it is on a
    filesystem this process can see (local disk or NFS), which rotation and best-model loading need."""

    def __init__(self, root: str, run_id: str):
        self.root = root
        self.run_id = run_id

    def stage(self, step: int, writes_shared: bool) -> str:
        staging = tempfile.mkdtemp(prefix=f"raytrainer-checkpoint-{step}-")
        if writes_shared:
            with open(os.path.join(staging, RUN_ID_NAME), "w") as f:
                f.write(self.run_id)
        return staging

    def commit(self, staging: str, step: int, metrics: dict, writes_shared: bool) -> str:
        import ray.train
        import torch.distributed as dist

        final = checkpoint_dir(self.root, step)
        if writes_shared and os.path.isdir(final):
            shutil.rmtree(final)  # a stale folder of an earlier run must not mix with this one
        if dist.is_initialized():
            dist.barrier()  # nobody uploads before the stale folder is gone
        try:
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(staging),
                             checkpoint_dir_name=os.path.basename(final))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return final
