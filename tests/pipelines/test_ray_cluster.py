"""Joining a running Ray cluster by address (`ray start --head`, as KubeRay's head runs it): evip's
code is shipped to the workers, the configured environment and the driver's credentials reach
them, and a real step (planning a source) runs its tasks there."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipelines.ray_runtime import RayOptions, RuntimeEnvOptions, runtime_env

ROOT = Path(__file__).parents[2]

DRIVER = textwrap.dedent("""
    import json, os, sys
    import ray
    from pipelines.layout import RunLayout
    from pipelines.plan import plan_source
    from pipelines.ray_runtime import RayOptions, ensure_ray
    from pipelines.sources import SourceOptions
    from pipelines.synthetic.laion import write_laion_files

    root = sys.argv[2]
    ensure_ray(RayOptions.model_validate({"address": sys.argv[1], "runtime_env": {
        "env_vars": {"EVIP_STAGE": "cluster"}, "env_from_driver": ["EVIP_TEST_CREDENTIAL"]}}))

    @ray.remote(num_cpus=0.25)
    def where():
        import pipelines
        return {"code": pipelines.__file__, "stage": os.environ.get("EVIP_STAGE"),
                "credential": os.environ.get("EVIP_TEST_CREDENTIAL")}

    write_laion_files(root + "/sources", rows=40, files=2)
    source = SourceOptions(name="laion", paths=[root + "/sources/*.parquet"])
    plan = plan_source(source, RunLayout(root + "/run").raw_folder("laion"), num_cpus=0.25)
    print("RESULT", json.dumps({**ray.get(where.remote()), "rows": plan["rows"]}))
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head(tmp_path):
    """A Ray head of its own (`ray start --head --block`), killed with its process group (never
    `ray stop`, which would stop every Ray on the machine; a graceful stop takes ~30 s)."""
    port = _free_port()
    head = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", f"--port={port}",
         "--node-ip-address=127.0.0.1", "--num-cpus=1", "--include-dashboard=false",
         "--disable-usage-stats", "--block"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env=dict(os.environ, RAY_AUTH_MODE="disabled"))  # fmt: skip
    address = f"127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:  # the GCS answers once the head is up
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.5)
    yield address
    os.killpg(head.pid, signal.SIGKILL)
    head.wait(timeout=60)


@pytest.mark.slow
def test_a_step_runs_on_a_cluster_joined_by_address_with_its_code_and_credentials(ray_head,
                                                                                  tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env |= {"EVIP_TEST_CREDENTIAL": "s3cr3t", "RAY_AUTH_MODE": "disabled"}
    done = subprocess.run([sys.executable, "-c", DRIVER, ray_head, str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    assert result["stage"] == "cluster" and result["credential"] == "s3cr3t"
    assert "runtime_resources" in result["code"] and str(ROOT) not in result["code"]  # shipped
    assert result["rows"] > 0


def test_secrets_are_refused_in_the_config_and_taken_from_the_driver():
    with pytest.raises(ValueError, match="env_from_driver"):
        RuntimeEnvOptions(env_vars={"AWS_SECRET_ACCESS_KEY": "x"})
    options = RayOptions(address="auto", runtime_env={"env_from_driver": ["EVIP_NOT_SET_ANYWHERE"]})
    with pytest.raises(ValueError, match="EVIP_NOT_SET_ANYWHERE"):
        runtime_env(options)
    shipped = runtime_env(RayOptions(address="auto"))["py_modules"]
    assert [m.__name__ for m in shipped] == ["pipelines", "model", "recaption", "flows"]
    assert "py_modules" not in runtime_env(RayOptions())  # a local Ray has the code
