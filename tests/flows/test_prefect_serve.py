"""Flows as a user triggers them from the Prefect UI: a real server, `evip serve` (every flow a
deployment whose form is the run config), a run triggered through the API and one from the UI
with a field changed. The campaign run from a deployment is `test_prefect_pool.py`'s."""

from __future__ import annotations

import json
import os
import shutil
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


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """`prefect server start` on a free loopback port, with its own PREFECT_HOME; its UI is
    told where its API is (`PREFECT_UI_API_URL`: the port is not Prefect's default)."""
    home = tmp_path_factory.mktemp("prefect")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_API_URL": url}  # fmt: skip
    env.pop("PREFECT_API_URL", None)
    log = (home / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
         "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        _wait(lambda: _api(url, "/health") is True, 120, "the Prefect server")
        yield url, env
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def small_run_config(root: Path) -> dict:
    """The deployments' run config: a campaign in a minute (a small web, one stage trained for
    two steps), of which the tests run the model flow."""
    return {
        "run_root": str(root / "run"), "ray": {"num_cpus": 2},
        "synthetic_web": {"num_images": 24, "bad_per_kind": 1, "slow_seconds": 1.0,
                          "port": _free_port()},
        "sources": [{"name": "synthetic", "paths": [f"{root}/run/sources/synthetic/*"]}],
        "download": {"samples_per_shard": 16, "timeout": 0.5},
        "teacher": {"max_tiles": 1, "generation": {"max_new_tokens": 6}},
        "recaption": {"batch_size": 8},
        "model": {"vision": {"tile_size": 224, "vision_hidden_size": 32, "max_tiles": 2}},
        "stages": {"stages": [{"name": "S1.1", "text": "alt_text", "samples_per_shard": 8}]},
        "train": {"workers": 1, "stages": [
            {"name": "S1.1", "trainable": ["patch_embed", "visual_ffn"], "steps": 2,
             "global_batch": 1, "max_packed_tokens": 1024, "checkpoint_every": 1,
             "milestones": 2}]},
        "evaluate": {"images": 4, "texts": 4, "max_new_tokens": 6, "cpus": 0.5},
    }  # fmt: skip


@pytest.fixture(scope="module")
def served(prefect_server, tmp_path_factory):
    """`evip serve` with a small run config: every flow as a deployment."""
    url, env = prefect_server
    root = tmp_path_factory.mktemp("served")
    config = small_run_config(root)
    (root / "run.yaml").write_text(yaml.safe_dump(config))
    serve_log = (root / "serve.log").open("w")
    serve = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "serve", "--config", str(root / "run.yaml")],
        cwd=ROOT, env={**env, "PREFECT_API_URL": url}, stdout=serve_log,
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        _wait(lambda: len(_api(url, "/deployments/filter", {})) == len(DEPLOYMENTS), 120,
              "the deployments")  # fmt: skip
        yield url, root, config
    finally:
        os.killpg(serve.pid, signal.SIGKILL)
        serve.wait()


DEPLOYMENTS = ["campaign", "ingest", "recaption", "stages", "model", "train", "evaluate"]


def finish(url: str, run_id: str, log: Path, timeout: float = 400) -> None:
    """Waits for a flow run to complete (a failed or crashed one fails the test with its log)."""

    def finished():
        state = _api(url, f"/flow_runs/{run_id}")["state"]["type"]
        assert state not in ("FAILED", "CRASHED"), log.read_text()[-3000:]
        return state == "COMPLETED"

    _wait(finished, timeout, "the triggered flow run")


@pytest.fixture(scope="module")
def triggered_model(served):
    """The model deployment (the cheapest flow: the init checkpoint from a tiny random LLM)
    triggered through the API, run to completion by `evip serve`. The whole campaign run from a
    deployment, killed and rerun, is `test_prefect_pool.py`'s."""
    url, root, _ = served
    deployments = {d["name"]: d for d in _api(url, "/deployments/filter", {})}
    run = _api(url, f"/deployments/{deployments['model']['id']}/create_flow_run", {})
    finish(url, run["id"], root / "serve.log")
    return deployments


@pytest.mark.slow
def test_every_flow_is_served_with_the_run_config_as_its_form_and_runs_when_triggered(
        served, triggered_model):
    url, root, config = served
    deployments = triggered_model
    assert sorted(deployments) == sorted(DEPLOYMENTS)
    campaign = deployments["campaign"]
    assert campaign["parameters"]["config"]["run_root"] == config["run_root"]
    form = json.dumps(campaign["parameter_openapi_schema"])
    assert "RunConfig" in form and "max_in_flight" in form and "config_path" in form  # the form
    # The triggered flow ran its step as a task, publishing its progress (final at the end).
    progress = {a["key"]: a for a in _api(url, "/artifacts/filter", {}) if a["type"] == "progress"}
    assert progress["model-run-progress"]["data"] == 100.0
    assert "model-run" in {t["name"] for t in _api(url, "/task_runs/filter", {})}
    run_root = Path(config["run_root"])
    assert (run_root / "checkpoints" / "init" / "config.json").exists()
    assert (run_root / "checkpoints" / "_done" / "init.json").exists()


ARTIFACTS = ROOT / "test-artifacts" / "ui"
"""Screenshots of the browser test (kept after the run: CI can publish the folder)."""


def _records(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in folder.rglob("_done/*.json")}


@pytest.mark.slow
def test_the_ui_lists_every_deployment_and_runs_one_with_a_changed_field(served,
                                                                         triggered_model):
    """Debian's chromium, headless, driven by Playwright: the deployments page, then a custom
    run of the model flow from its page with one field of the form changed: the student LLM
    pretrained for 2 steps instead of none, so the LLM and the init checkpoint built on it are
    made anew, and the random LLM's folder is left as it was."""
    from playwright.sync_api import sync_playwright

    url, root, config = served
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed (.ci/run installs it: apt-get install chromium)"
    ui = url[: -len("/api")]
    run_root = Path(config["run_root"])
    before = _records(run_root)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{ui}/deployments")
        page.get_by_text(f"{len(DEPLOYMENTS)} Deployments").wait_for(timeout=60_000)
        for name in DEPLOYMENTS:  # each deployment and its flow (rendered as they load)
            page.get_by_text(name, exact=True).first.wait_for(timeout=30_000)
            page.get_by_text(f"evip-{name}", exact=True).first.wait_for(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "deployments.png"), full_page=True)

        page.get_by_text("model", exact=True).first.click()
        page.get_by_role("button", name="Run", exact=True).click()
        page.get_by_text("Custom run").click()
        steps = page.locator(
            "xpath=//*[normalize-space(text())='Pretrain Steps (Optional)']/following::input[1]")
        steps.wait_for(timeout=60_000)
        assert steps.input_value() == "0"  # the run config's: a random LLM
        steps.fill("2")  # model.tiny_llm.pretrain_steps
        page.screenshot(path=str(ARTIFACTS / "custom-run.png"))
        earlier = {r["id"] for r in _api(url, "/flow_runs/filter", {})}
        page.get_by_role("button", name="Submit", exact=True).click()
        run_id = _wait(lambda: next((r["id"] for r in _api(url, "/flow_runs/filter", {})
                                     if r["id"] not in earlier), None), 60, "the new flow run")
        finish(url, run_id, root / "serve.log")
        page.goto(f"{ui}/runs/flow-run/{run_id}")
        page.get_by_text("Completed").first.wait_for(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "flow-run-completed.png"))
        browser.close()
    parameters = _api(url, f"/flow_runs/{run_id}")["parameters"]
    assert parameters["config"]["model"]["tiny_llm"]["pretrain_steps"] == 2
    after = _records(run_root)
    assert json.loads(after["llm/_done/tiny-llama-0-pretrained.json"])["settings"]["tiny_llm"][
        "pretrain_steps"] == 2  # fmt: skip
    assert after["llm/_done/tiny-llama-0.json"] == before["llm/_done/tiny-llama-0.json"]
    init = json.loads(after["checkpoints/_done/init.json"])["settings"]
    assert init["model"]["tiny_llm"]["pretrain_steps"] == 2  # rebuilt on the pretrained LLM
