"""Publishing every flow of `flows/campaign.py` as a Prefect deployment, with the run config as
each deployment's default parameters:
- `evip serve`: the deployments run in this one process (a laptop, one machine), on the
  configured Prefect server (`PREFECT_API_URL`) or on one this command starts on 127.0.0.1;
- `evip deploy --pool NAME`: the deployments go to a work pool of the configured server, and its
  workers (process, Docker, Kubernetes) run what the UI triggers — the lab's pattern.
Either way a deployment names its flow by module path (`flows.campaign.campaign`), so wherever evip
is installed (a worker's venv or image) can run it; no code is uploaded."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request

from flows.config import RunConfig


@contextlib.contextmanager
def prefect_server(port: int):
    """The configured Prefect API URL, or a `prefect server start` on 127.0.0.1:`port` for as
    long as the context lasts (its UI told where its API is: `PREFECT_UI_API_URL`)."""
    configured = os.environ.get("PREFECT_API_URL")
    if configured:
        yield configured
        return
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_UI_API_URL": api, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host",
                               "127.0.0.1", "--port", str(port)], env=env)  # fmt: skip
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{api}/health", timeout=5):
                    break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"the Prefect server on port {port} did not start") from None
                time.sleep(0.5)
        yield api
    finally:
        server.terminate()
        server.wait(timeout=30)


def deployments(config: RunConfig) -> list:
    """Every flow as a deployment (named as in `flows.campaign.FLOWS`), the config its form's
    default."""
    from prefect.deployments.runner import EntrypointType

    from flows.campaign import FLOWS

    parameters = {"config": config.model_dump(mode="json")}
    # Runs import the flows as modules (flows.campaign), not as a script whose folder would
    # shadow the `recaption` package with flows/recaption.py.
    return [flow.to_deployment(name=name, parameters=parameters, description=flow.description,
                               entrypoint_type=EntrypointType.MODULE_PATH)
            for name, flow in FLOWS.items()]  # fmt: skip


def serve(config: RunConfig, port: int = 4200) -> None:
    """Serves every flow until interrupted; prints where the UI is."""
    from prefect import serve as prefect_serve
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with prefect_server(port) as api, temporary_settings({PREFECT_API_URL: api}):
        served = deployments(config)
        print(f"evip: serving {len(served)} deployments ({', '.join(d.name for d in served)}); "
              f"Prefect UI: {api[: -len('/api')]}", flush=True)
        prefect_serve(*served)


def deploy(config: RunConfig, pool: str, image: str | None = None) -> list[str]:
    """Deploys every flow to work pool `pool` of the Prefect server at `PREFECT_API_URL`;
    returns the deployments' names (`<flow>/<deployment>`).

    Args:
        image: the image the pool's workers run (Docker, Kubernetes pools: evip installed in
            it); None for a process pool, whose workers run in an environment with evip.

    Raises:
        ValueError: no PREFECT_API_URL, or no such work pool (create it first:
            `prefect work-pool create NAME --type process`).
    """
    from prefect import deploy as prefect_deploy
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise ValueError("evip deploy: set PREFECT_API_URL to the Prefect server of the work "
                         "pool (`evip serve` runs flows without one)")  # fmt: skip
    made = deployments(config)
    prefect_deploy(*made, work_pool_name=pool, image=image, build=False, push=False,
                   print_next_steps_message=False, ignore_warnings=True)  # fmt: skip
    names = [f"{d.flow_name}/{d.name}" for d in made]
    print(f"evip: deployed {len(names)} flows to work pool {pool!r}: {', '.join(names)}; start "
          f"a worker with `prefect worker start --pool {pool}`", flush=True)
    return names
