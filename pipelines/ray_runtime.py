"""Connecting to Ray: a local one by default, a running cluster when the config names an address.

Joining a cluster, evip ships its own code to the workers (Ray's `py_modules`), so the cluster's
image needs only the dependencies (ray, torch, deepspeed, ...), and hands them the environment the
config declares. Secrets never sit in the config: `env_from_driver` names variables whose values
are copied from the driver's environment (where a Prefect worker or a Kubernetes Secret put them).
"""

from __future__ import annotations

import os
import re

from pydantic import Field, field_validator

from model.options import FrozenOptions

# img2dataset imports albumentations, which otherwise asks PyPI for updates in every worker.
WORKER_ENV = {"NO_ALBUMENTATIONS_UPDATE": "1"}
CODE_PACKAGES = ("pipelines", "model", "recaption", "flows")
"""evip's packages, shipped to a cluster's workers."""
_SECRET = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|ACCESS_KEY|API_KEY|PRIVATE")


class RuntimeEnvOptions(FrozenOptions):
    """What the Ray workers of this run get (Ray's runtime environment)."""

    ship_code: bool = True
    """Upload evip's packages to a cluster's workers (ignored for a local Ray, which has them)."""
    pip: list[str] = []
    """Extra pip requirements installed for the workers (Ray caches them per node)."""
    env_vars: dict[str, str] = {}
    """Environment variables of the workers. Secrets are refused here: use `env_from_driver`."""
    env_from_driver: list[str] = []
    """Names of variables copied from the driver's environment to the workers (credentials such
    as AWS_SECRET_ACCESS_KEY): their values are never written in a config or a report."""

    @field_validator("env_vars")
    @classmethod
    def _no_secrets(cls, env: dict[str, str]) -> dict[str, str]:
        secret = [name for name in env if _SECRET.search(name.upper())]
        if secret:
            raise ValueError(f"{secret} look like secrets: set them in the driver's environment "
                             "and list their names under ray.runtime_env.env_from_driver")
        return env


class RayOptions(FrozenOptions):
    """Where Ray jobs run."""

    address: str | None = None
    """None starts a local Ray; `auto`, a GCS address (`head:6379`) or `ray://head:10001` joins a
    running cluster (KubeRay's RayCluster head service, `ray start --head`)."""
    num_cpus: int | None = Field(None, gt=0)
    """Logical CPUs of a local Ray (None: all cores). Ignored when joining a cluster."""
    object_store_gib: float | None = Field(2.0, gt=0)
    """Object store of a local Ray, in GiB."""
    runtime_env: RuntimeEnvOptions = RuntimeEnvOptions()
    """What the workers get: evip's code, pip requirements, environment variables, credentials."""
    log_to_driver: bool | None = None
    """Stream workers' logs to the driver (None: when joining a cluster, where they are the only
    place a worker's error shows; a local Ray keeps them in its session folder)."""


def runtime_env(options: RayOptions) -> dict:
    """Ray's runtime_env for the run's workers.

    Raises:
        ValueError: a variable of `env_from_driver` is not set in the driver's environment.
    """
    env = options.runtime_env
    missing = [name for name in env.env_from_driver if name not in os.environ]
    if missing:
        raise ValueError(f"ray.runtime_env.env_from_driver: {missing} not set in this "
                         "environment (the driver hands them to the workers)")  # fmt: skip
    out = {"env_vars": {**WORKER_ENV, **env.env_vars,
                        **{name: os.environ[name] for name in env.env_from_driver}}}  # fmt: skip
    if env.pip:
        out["pip"] = list(env.pip)
    if options.address is not None and env.ship_code:
        import importlib

        out["py_modules"] = [importlib.import_module(name) for name in CODE_PACKAGES]
    return out


def ensure_ray(options: RayOptions | None = None):
    """Initialises Ray once per process (a no-op when already connected); returns the module."""
    import ray

    options = options or RayOptions()
    if ray.is_initialized():
        return ray
    os.environ.update(WORKER_ENV)
    env = runtime_env(options)
    if options.address is not None:
        logs = True if options.log_to_driver is None else options.log_to_driver
        ray.init(address=options.address, runtime_env=env, log_to_driver=logs)
    else:
        memory = int(options.object_store_gib * 2**30) if options.object_store_gib else None
        # address="local": a new Ray of our own, never one another process left running.
        ray.init(address="local", num_cpus=options.num_cpus, object_store_memory=memory,
                 runtime_env=env, include_dashboard=False,
                 log_to_driver=bool(options.log_to_driver))  # fmt: skip
    return ray
