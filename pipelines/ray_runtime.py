"""Connecting to Ray: a local one by default, a cluster when the config names an address."""

from __future__ import annotations

import os

from pydantic import Field

from model.options import FrozenOptions

# img2dataset imports albumentations, which otherwise asks PyPI for updates in every worker.
WORKER_ENV = {"NO_ALBUMENTATIONS_UPDATE": "1"}


class RayOptions(FrozenOptions):
    """Where Ray jobs run."""

    address: str | None = None
    """None starts a local Ray; `ray://head:10001` or `auto` joins a running cluster."""
    num_cpus: int | None = Field(None, gt=0)
    """Logical CPUs of a local Ray (None: all cores). Ignored when joining a cluster."""
    object_store_gib: float | None = Field(2.0, gt=0)
    """Object store of a local Ray, in GiB."""


def ensure_ray(options: RayOptions | None = None):
    """Initialises Ray once per process (a no-op when already connected); returns the module."""
    import ray

    options = options or RayOptions()
    if ray.is_initialized():
        return ray
    os.environ.update(WORKER_ENV)
    runtime_env = {"env_vars": WORKER_ENV}
    if options.address is not None:
        ray.init(address=options.address, runtime_env=runtime_env, log_to_driver=False)
    else:
        memory = int(options.object_store_gib * 2**30) if options.object_store_gib else None
        # address="local": a new Ray of our own, never one another process left running.
        ray.init(address="local", num_cpus=options.num_cpus, object_store_memory=memory,
                 runtime_env=runtime_env, include_dashboard=False, log_to_driver=False)  # fmt: skip
    return ray
