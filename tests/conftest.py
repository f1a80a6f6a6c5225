"""Shared tiny fixtures: every model here has a few hundred thousand random weights, built here."""

from __future__ import annotations

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
