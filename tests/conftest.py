"""Shared tiny fixtures: every model here has a few hundred thousand random weights, built here."""

from __future__ import annotations

import os
import socket
import tempfile

import pytest
import torch

from model.configuration import MonoInternVLConfig
from model.modeling import MonoInternVLForCausalLM
from model.options import TinyLLMOptions
from model.tiny import build_tiny_tokenizer, save_tiny_llm

IMG_CONTEXT_ID, IMG_START_ID, IMG_END_ID = 5, 6, 7


def tiny_config(**overrides) -> MonoInternVLConfig:
    """A 2-layer, width-32 model whose 56-px tiles give 4 visual tokens each."""
    fields = dict(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        patch_size=14,
        tile_size=56,
        vision_hidden_size=16,
        image_token_id=IMG_CONTEXT_ID,
        image_start_token_id=IMG_START_ID,
        image_end_token_id=IMG_END_ID,
        pad_token_id=0,
    )
    return MonoInternVLConfig(**{**fields, **overrides})


def tiny_model(seed: int = 0, **overrides) -> MonoInternVLForCausalLM:
    torch.manual_seed(seed)
    return MonoInternVLForCausalLM(tiny_config(**overrides)).eval()


def image_prompt(text_before: list[int], num_tiles: int, text_after: list[int], per_tile: int = 4):
    """Token ids: text, <img>, <IMG_CONTEXT> x tokens, </img>, text."""
    span = [IMG_START_ID] + [IMG_CONTEXT_ID] * (num_tiles * per_tile) + [IMG_END_ID]
    return text_before + span + text_after


@pytest.fixture(scope="session")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory):
    """A tiny random Llama saved as a Hugging Face checkpoint directory."""
    return save_tiny_llm(tmp_path_factory.mktemp("tiny-llama"), TinyLLMOptions(family="llama"))


@pytest.fixture(scope="session")
def qwen2_dir(tmp_path_factory):
    """A tiny random Qwen2 (q/k/v biases, tied embeddings) saved as a checkpoint directory."""
    return save_tiny_llm(tmp_path_factory.mktemp("tiny-qwen2"), TinyLLMOptions(family="qwen2"))


@pytest.fixture(params=["llama", "qwen2"])
def tiny_llm_dir(request):
    return request.getfixturevalue(f"{request.param}_dir")


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray for the whole session (starting one costs seconds)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# A real S3 API (moto's server) on 127.0.0.1 for object-store run roots. The endpoint is set before
# any Ray starts, so Ray workers inherit it as a user's cluster inherits its credentials.
S3_PORT = _free_port()
os.environ.setdefault("EVIP_CACHE", tempfile.mkdtemp(prefix="evip-cache-"))
os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                  AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=f"http://127.0.0.1:{S3_PORT}")


@pytest.fixture(scope="session")
def s3_bucket():
    """A bucket on a moto S3 server on 127.0.0.1; yields its s3:// URL."""
    import logging

    import s3fs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=S3_PORT, verbose=False)
    server.start()
    s3fs.S3FileSystem().mkdir("evip-test")
    yield "s3://evip-test"
    server.stop()


FABRICATED_SOURCES = ("laion-a", "laion-b", "coyo-c")


def fabricated_config(root, **overrides):
    """Run config of three LAION-shaped sources sharing URLs (`fabricated_run`)."""
    from flows.config import RunConfig

    sources = [{"name": n, "paths": [str(root / n / "*.parquet")]} for n in FABRICATED_SOURCES]
    return RunConfig.model_validate({
        "run_root": str(root / "run"), "sources": sources,
        "download": {"samples_per_shard": 64, "repair_rounds": 1, "max_in_flight": 2},
        **overrides,
    })  # fmt: skip


@pytest.fixture(scope="session")
def fabricated_run(tmp_path_factory, ray_local):
    """Three LAION-shaped sources sharing URLs, downloaded (fabricated: tiny gray JPEGs) with one
    repair round; returns the run config."""
    from pipelines.ingest import download_source
    from pipelines.layout import RunLayout
    from pipelines.synthetic.laion import FabricatedDownloaderWithImages, write_laion_files

    root = tmp_path_factory.mktemp("fabricated")
    config = fabricated_config(root)
    for index, source in enumerate(config.sources):
        write_laion_files(str(root / source.name), rows=300, files=2, seed=index,
                          repeated_urls=0.03, first_id=200 * index)  # fmt: skip
        report = download_source(source, config.download, RunLayout(config.run_root),
                                 make_downloader=FabricatedDownloaderWithImages)  # fmt: skip
        assert report["repairs"][0]["retried"] > 0
    return config
