"""Whether this driver is attached to a Ray cluster, so that a run without a ``scaling_config``
trains on the cluster's workers instead of in this process.

Attached: a job submitted to a cluster (``RAY_ADDRESS`` set, as Ray Jobs does), or a script or
notebook whose ``ray.init()`` joined a running cluster (on a head node, ``ray.init()`` finds the
local cluster; ``ray.init("ray://...")`` is Ray Client). Not attached: a local Ray instance that
this process started itself (``ray.init()`` on a laptop, raytrainer's own start-up), no Ray at
all, and code inside a Ray task or actor (a Tune trial, a Train worker), whose run stays where
it is.
"""

import os


def attached_to_cluster() -> bool:
    import ray

    if ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None:
        return False
    return bool(os.environ.get("RAY_ADDRESS")) or joined_existing_cluster()


def joined_existing_cluster() -> bool:
    """True when ``ray.init()`` connected this process to a cluster it did not start."""
    import ray

    if not ray.is_initialized():
        return False
    try:
        from ray.util.client import ray as client

        if client.is_connected():
            return True
    except ImportError:  # pragma: no cover - Ray Client ships with ray
        pass
    # ray.init() either starts a head node of its own or connects to a running one
    node = getattr(ray._private.worker, "_global_node", None)
    return node is not None and not getattr(node, "head", True)
