"""The completion record: same settings skip, changed settings redo and say which, a killed save
never counts; on any fsspec filesystem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import storage
from pipelines.completion import CompletionLog, changed_keys, settings_hash
from pipelines.layout import RunLayout
from pipelines.model_folders import model_folder

ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize("root", ["memory://evip-test/run", "LOCAL"])
def test_plan_skips_same_settings_and_redoes_changed_ones(root, tmp_path):
    folder = str(tmp_path / "out") if root == "LOCAL" else f"{root}/out"
    log = CompletionLog(folder)
    settings = {"teacher": {"name": "a", "prompts": ["x"]}, "cleaning": {"max_words": 30}}
    for unit in ("00000", "00001"):
        storage.write_bytes(b"rows", storage.join(folder, f"{unit}.parquet"))
        log.write(unit, settings, {"captions": 3})
    plan = log.plan(["00000", "00001", "00002"], settings)
    assert (plan.done, plan.todo, plan.stale) == (["00000", "00001"], ["00002"], [])

    changed = {**settings, "teacher": {"name": "a", "prompts": ["y"]}}
    plan = log.plan(["00000", "00001", "00002"], changed)
    assert plan.todo == ["00000", "00001", "00002"] and plan.stale == ["00000", "00001"]
    assert plan.changed == ["teacher.prompts"]
    assert "redoing 2 made with other settings (teacher.prompts)" in plan.describe("recaption")
    assert log.stale(changed) == ["00000", "00001"] and log.stale(settings) == []
    assert log.read("00000")["settings"] == settings  # kept in full for `evip status`
    log.clear("00000")
    assert not log.is_complete("00000", settings) and log.is_complete("00001", settings)


def test_settings_hash_ignores_key_order_and_changed_keys_names_paths():
    assert settings_hash({"a": 1, "b": {"c": 2}}) == settings_hash({"b": {"c": 2}, "a": 1})
    assert changed_keys({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 3, "d": 0}}) == ["b.c", "b.d"]


def test_errors_are_kept_for_status(tmp_path):
    log = CompletionLog(str(tmp_path))
    assert log.last_error() is None
    log.write_error("step", "Traceback ...\nValueError: boom")
    assert log.last_error()["error"].endswith("boom")
    log.clear_errors()
    assert log.last_error() is None


KILLED_SAVE = """
import os, signal, sys
from pathlib import Path
from pipelines.model_folders import model_folder

def save(local: Path):
    (local / "config.json").write_text("{}")  # what transformers writes first
    os.kill(os.getpid(), signal.SIGKILL)      # killed before the weights

model_folder(sys.argv[1], "init", {"stage": "init"}, save, Path(sys.argv[2]))
"""


@pytest.mark.parametrize("remote", [False, True])
def test_a_checkpoint_killed_mid_save_is_not_complete(tmp_path, remote):
    parent = str(tmp_path / "checkpoints")
    killed = subprocess.run([sys.executable, "-c", KILLED_SAVE, parent, str(tmp_path / "cache")],
                            cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert killed.returncode == -9, killed.stderr
    assert (tmp_path / "checkpoints/init/config.json").exists()  # half a checkpoint on disk
    assert not CompletionLog(parent).is_complete("init", {"stage": "init"})

    calls = []

    def save(local: Path):
        calls.append(local)
        (local / "config.json").write_text("{}")
        (local / "model.safetensors").write_bytes(b"weights")

    if remote:  # the same rule when the folder lives in an object store
        parent = "memory://evip-ckpt/checkpoints"
    local = model_folder(parent, "init", {"stage": "init"}, save, tmp_path / "cache")
    assert (local / "model.safetensors").read_bytes() == b"weights"
    assert model_folder(parent, "init", {"stage": "init"}, save, tmp_path / "cache") == local
    assert len(calls) == 1  # complete now: not written again
    record = CompletionLog(parent).read("init")
    assert record["covered"]["files"] == ["config.json", "model.safetensors"]
    if remote:
        storage.remove(str(tmp_path / "cache"))
        again = model_folder(parent, "init", {"stage": "init"}, save, tmp_path / "cache2")
        assert (again / "model.safetensors").read_bytes() == b"weights" and len(calls) == 1


def test_layout_paths_on_object_store_roots():
    layout = RunLayout("s3://bucket/run")
    assert layout.raw_folder("laion").shard(7, "tar") == "s3://bucket/run/raw/laion/00007.tar"
    assert layout.keep_list("laion", 7) == "s3://bucket/run/filtered/laion/00007.parquet"
    caption = layout.caption_shard("internvl", "laion", 7)
    assert caption == "s3://bucket/run/captions/internvl/laion/00007.parquet"
    assert layout.local_cache("llm").is_absolute()
