"""Whether this process's ``ray.init()`` joined a running Ray cluster (on a head node ``ray.init()``
finds the local cluster; ``ray.init("ray://...")`` is Ray Client) rather than starting a local
instance of its own (``ray.init()`` on a laptop, raytrainer's own start-up). A driver that joined
a cluster counts as attached to it (``runtime.scaling``): its runs without a ``scaling_config``
train on the cluster's workers.
"""


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
