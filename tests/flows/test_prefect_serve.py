"""The campaign as a user triggers it from the Prefect UI: a real server, `evip serve`, a run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(url: str, path: str, body: dict | None = None, attempts: int = 10):
    """One REST call; a busy server's 503 is retried, as Prefect's own client does."""
    data = None if body is None else json.dumps(body).encode()
    for attempt in range(attempts):
        request = urllib.request.Request(f"{url}{path}", data=data,
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            if error.code != 503 or attempt == attempts - 1:
                raise
            time.sleep(1 + attempt)


def _wait(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"timed out waiting for {what}")


@pytest.fixture
def prefect_server(tmp_path):
    """`prefect server start` on a free loopback port, with its own PREFECT_HOME."""
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}  # fmt: skip
    env.pop("PREFECT_API_URL", None)
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
         "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/api"
    try:
        _wait(lambda: _api(url, "/health") is True, 120, "the Prefect server")
        yield url, env
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


@pytest.mark.slow
def test_served_campaign_runs_when_triggered_and_publishes_reports(prefect_server, tmp_path):
    url, env = prefect_server
    config = {
        "run_root": str(tmp_path / "run"), "ray": {"num_cpus": 2},
        "synthetic_web": {"num_images": 24, "bad_per_kind": 1, "slow_seconds": 1.0, "port": 0},
        "sources": [{"name": "synthetic", "paths": [f"{tmp_path}/run/sources/synthetic/*"]}],
        "download": {"samples_per_shard": 16, "timeout": 0.5},
        "teacher": {"max_tiles": 1, "generation": {"max_new_tokens": 6}},
        "recaption": {"batch_size": 8},
        "model": {"vision": {"tile_size": 224, "vision_hidden_size": 32, "max_tiles": 2}},
    }  # fmt: skip
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    serve_log = (tmp_path / "serve.log").open("w")
    serve = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "serve", "--config", str(tmp_path / "run.yaml")],
        cwd=ROOT, env={**env, "PREFECT_API_URL": url}, stdout=serve_log,
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deployments = _wait(lambda: _api(url, "/deployments/filter", {}), 120, "the deployment")
        assert deployments[0]["name"] == "evip"
        assert deployments[0]["parameters"]["config"]["run_root"] == str(tmp_path / "run")
        form = json.dumps(deployments[0]["parameter_openapi_schema"])
        assert "RunConfig" in form and "max_in_flight" in form  # the UI's parameter form
        run = _api(url, f"/deployments/{deployments[0]['id']}/create_flow_run", {})

        def finished():
            state = _api(url, f"/flow_runs/{run['id']}")["state"]["type"]
            assert state not in ("FAILED", "CRASHED"), (tmp_path / "serve.log").read_text()[-3000:]
            return state == "COMPLETED"

        _wait(finished, 400, "the triggered flow run")
    finally:
        os.killpg(serve.pid, signal.SIGKILL)
        serve.wait()
    artifacts = _api(url, "/artifacts/filter", {})
    keys = {a["key"] for a in artifacts}
    assert {"ingest-synthetic", "recaption-synthetic", "stages-run"} <= keys
    ingest = next(a for a in artifacts if a["key"] == "ingest-synthetic")
    assert "| kept |" in ingest["data"]
    assert (tmp_path / "run" / "checkpoints" / "init" / "model.safetensors").exists()
    assert (tmp_path / "run" / "reports" / "ingest-synthetic.png").exists()
