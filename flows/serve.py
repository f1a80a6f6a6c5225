"""`evip serve`: every flow of `flows/campaign.py` as a deployment of one process, with the run
config as each deployment's default parameters, on the configured Prefect server
(`PREFECT_API_URL`) or on one this command starts on 127.0.0.1."""

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


def serve(config: RunConfig, port: int = 4200) -> None:
    """Serves every flow until interrupted; prints where the UI is."""
    from prefect import serve as prefect_serve
    from prefect.deployments.runner import EntrypointType
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.campaign import FLOWS

    parameters = {"config": config.model_dump(mode="json")}
    with prefect_server(port) as api, temporary_settings({PREFECT_API_URL: api}):
        # Runs import the flows as modules (flows.campaign), not as a script whose folder would
        # shadow the `recaption` package with flows/recaption.py.
        deployments = [flow.to_deployment(name=name, parameters=parameters,
                                          description=flow.description,
                                          entrypoint_type=EntrypointType.MODULE_PATH)
                       for name, flow in FLOWS.items()]  # fmt: skip
        print(f"evip: serving {len(deployments)} deployments ({', '.join(FLOWS)}); "
              f"Prefect UI: {api[: -len('/api')]}", flush=True)
        prefect_serve(*deployments)
