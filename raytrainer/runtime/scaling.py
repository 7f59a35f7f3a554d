"""Which ``ScalingConfig`` a run uses, decided on the driver.

Without one, a script or notebook attached to a Ray cluster trains on one Ray worker, with a GPU
when the cluster has one: a job submitted to the cluster (``RAY_ADDRESS`` set, as Ray Jobs does),
or a driver whose ``ray.init()`` joined a running cluster (a notebook on a head node; see
``runtime.cluster``). Anything else (a laptop, tests, a local Ray instance this process started, a
Ray Tune trial) runs in this process (local mode; see ``runtime.launch``).
"""

import os
import sys


def resolve_scaling_config(scaling_config):
    """The ScalingConfig a run uses (see the module docstring)."""
    from ray.train import ScalingConfig

    if scaling_config is not None:
        return scaling_config
    if not attached_to_cluster():
        return ScalingConfig(num_workers=0)
    import ray

    if not ray.is_initialized():
        ray.init()
    return ScalingConfig(num_workers=1, use_gpu=ray.cluster_resources().get("GPU", 0) > 0)


def attached_to_cluster() -> bool:
    if "ray" not in sys.modules:  # a process that never imported Ray joined no cluster
        return bool(os.environ.get("RAY_ADDRESS"))
    import ray

    from .cluster import joined_existing_cluster

    # inside a Ray task or actor (a Tune trial, a Train worker) the run stays where it is
    if ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None:
        return False
    return bool(os.environ.get("RAY_ADDRESS")) or joined_existing_cluster()


def is_local_mode(scaling_config) -> bool:
    """Whether the loop runs in this process. ``None`` counts as local unless this driver is
    attached to a cluster (see ``resolve_scaling_config``)."""
    if scaling_config is None:
        return not attached_to_cluster()
    return scaling_config.num_workers in (0, None)


def num_workers(scaling_config):
    """The number of Ray Train workers a run will use, or None when it runs in this process."""
    if is_local_mode(scaling_config):
        return None
    return scaling_config.num_workers if scaling_config is not None else 1
