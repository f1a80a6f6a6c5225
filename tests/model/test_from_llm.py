"""`from_llm`: with no image, the built model computes exactly what the original LLM computes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

from model.from_llm import from_llm
from model.internlm2_layout import pack_wqkv, to_internlm2, unpack_wqkv
from model.options import ExpertOptions, TinyLLMOptions, VisionOptions
from model.tiny import build_tiny_tokenizer, save_tiny_llm

VISION = VisionOptions(tile_size=56, vision_hidden_size=16)


@pytest.mark.parametrize("attention_experts", [False, True])
def test_text_logits_equal_the_original_llm(tiny_llm_dir, attention_experts):
    original = AutoModelForCausalLM.from_pretrained(tiny_llm_dir).eval()
    model, tokenizer = from_llm(
        tiny_llm_dir, ExpertOptions(visual_attention_experts=attention_experts), VISION
    )
    ids = torch.randint(0, original.config.vocab_size, (2, 19))
    torch.testing.assert_close(model(input_ids=ids).logits, original(ids).logits, rtol=0, atol=1e-6)
    assert model.config.image_token_id == tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    # Experts start as copies of the text weights.
    layer = model.model.layers[0]
    assert torch.equal(layer.visual_mlp.gate_proj.weight, layer.mlp.gate_proj.weight)
    assert layer.visual_mlp.gate_proj.weight.data_ptr() != layer.mlp.gate_proj.weight.data_ptr()
    if attention_experts:
        assert torch.equal(layer.self_attn.visual_q_proj.weight, layer.self_attn.q_proj.weight)


def test_sharded_checkpoint_loads(tmp_path, tokenizer):
    from model.tiny import build_tiny_llm

    original = build_tiny_llm(TinyLLMOptions(), tokenizer)
    original.save_pretrained(tmp_path, max_shard_size="50KB")
    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors.index.json").exists()
    model, _ = from_llm(tmp_path, vision=VISION)
    ids = torch.randint(0, original.config.vocab_size, (1, 7))
    torch.testing.assert_close(model(input_ids=ids).logits, original(ids).logits, rtol=0, atol=1e-6)


def test_missing_special_tokens_are_added_and_text_logits_kept(tmp_path):
    text_tokenizer = build_tiny_tokenizer(with_image_tokens=False)
    assert "<IMG_CONTEXT>" not in text_tokenizer.get_vocab()
    save_tiny_llm(tmp_path, TinyLLMOptions(), tokenizer=text_tokenizer)
    original = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    vocab = original.config.vocab_size

    model, tokenizer = from_llm(tmp_path, vision=VISION)
    assert model.config.vocab_size == len(tokenizer) == vocab + 9  # image + grounding tokens
    assert model.config.image_token_id >= vocab
    ids = torch.randint(0, vocab, (1, 9))
    logits = model(input_ids=ids).logits
    torch.testing.assert_close(logits[..., :vocab], original(ids).logits, rtol=0, atol=1e-6)


def test_internlm2_checkpoint_loads_with_packed_wqkv(tmp_path, llama_dir, tokenizer):
    original = AutoModelForCausalLM.from_pretrained(llama_dir).eval()
    cfg = original.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    state = {
        f"model.{k}" if not k.startswith(("model.", "lm_head")) else k: v
        for k, v in original.state_dict().items()
    }
    save_file(
        to_internlm2(state, cfg.num_key_value_heads, head_dim), tmp_path / "model.safetensors"
    )
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "model_type": "internlm2",
                "vocab_size": cfg.vocab_size,
                "hidden_size": cfg.hidden_size,
                "intermediate_size": cfg.intermediate_size,
                "num_hidden_layers": cfg.num_hidden_layers,
                "num_attention_heads": cfg.num_attention_heads,
                "num_key_value_heads": cfg.num_key_value_heads,
                "rms_norm_eps": cfg.rms_norm_eps,
                "rope_theta": 10000.0,
                "bias": False,
            }
        )
    )
    model, _ = from_llm(tmp_path, vision=VISION, tokenizer=tokenizer)
    ids = torch.randint(0, cfg.vocab_size, (2, 11))
    torch.testing.assert_close(model(input_ids=ids).logits, original(ids).logits, rtol=0, atol=1e-6)


def test_wqkv_pack_unpack_round_trip_and_grouping():
    heads, kv_heads, d, width = 8, 2, 4, 6
    q, k, v = (
        torch.randn(heads * d, width),
        torch.randn(kv_heads * d, width),
        torch.randn(kv_heads * d, width),
    )
    packed = pack_wqkv(q, k, v, kv_heads, d)
    # Group 0 holds query heads 0..3, then key head 0, then value head 0.
    assert torch.equal(packed[: 4 * d], q[: 4 * d])
    assert torch.equal(packed[4 * d : 5 * d], k[:d])
    assert torch.equal(packed[5 * d : 6 * d], v[:d])
    for a, b in zip(unpack_wqkv(packed, heads, kv_heads, d), (q, k, v)):
        assert torch.equal(a, b)


def test_bad_checkpoints_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        from_llm(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="gpt2"):
        from_llm(tmp_path)
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "model_type": "llama",
                "vocab_size": 10,
                "hidden_size": 8,
                "intermediate_size": 8,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "rope_scaling": {"rope_type": "yarn"},
            }
        )
    )
    with pytest.raises(ValueError, match="yarn"):
        from_llm(tmp_path)


ROPE_SCALINGS = {
    "linear": {"rope_type": "linear", "factor": 4.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 8},
}  # fmt: skip


def _scaled_llama(path, tokenizer, rope: dict | None):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), **TinyLLMOptions().shape(),
                         max_position_embeddings=16,
                         rope_parameters={"rope_theta": 10000.0, **(rope or {})})  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return AutoModelForCausalLM.from_pretrained(path).eval()


@pytest.mark.parametrize("rope", list(ROPE_SCALINGS))
def test_scaled_rope_logits_equal_the_source_llm_beyond_its_context(tmp_path, tokenizer, rope):
    """Positions up to 3x the original context: the scaling, not default RoPE, is what runs."""
    original = _scaled_llama(tmp_path / "scaled", tokenizer, ROPE_SCALINGS[rope])
    plain = _scaled_llama(tmp_path / "plain", tokenizer, None)
    model, _ = from_llm(tmp_path / "scaled", vision=VISION, tokenizer=tokenizer)
    assert model.config.rope_scaling["rope_type"] == rope
    ids = torch.randint(0, original.config.vocab_size, (2, 48))
    logits = model(input_ids=ids).logits
    torch.testing.assert_close(logits, original(ids).logits, rtol=0, atol=1e-5)
    assert not torch.allclose(logits, plain(ids).logits, atol=1e-3)


def test_internlm2_dynamic_ntk_rope_equals_the_transformers_implementation(tmp_path, tokenizer):
    """InternLM2's config says `rope_scaling: {type: dynamic, factor: 2}` (its remote code); the
    transformers Llama with the same dynamic NTK scaling is the reference."""
    original = _scaled_llama(tmp_path / "llama", tokenizer, ROPE_SCALINGS["dynamic"])
    cfg = original.config
    state = {k: v for k, v in original.state_dict().items()}
    save_file(to_internlm2(state, cfg.num_key_value_heads, cfg.head_dim),
              tmp_path / "model.safetensors")  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "internlm2", "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size, "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads, "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": 10000.0, "max_position_embeddings": 16, "bias": False,
        "rope_scaling": {"type": "dynamic", "factor": 2.0}}))  # fmt: skip
    model, _ = from_llm(tmp_path, vision=VISION, tokenizer=tokenizer)
    ids = torch.randint(0, cfg.vocab_size, (1, 40))
    torch.testing.assert_close(model(input_ids=ids).logits, original(ids).logits, rtol=0,
                               atol=1e-5)  # fmt: skip


REMOTE_TOKENIZER = '''
from transformers import PreTrainedTokenizerFast


class RemoteTokenizerFast(PreTrainedTokenizerFast):
    """A tokenizer that ships as code beside the weights, as InternLM2's does."""
'''


def test_a_remote_code_tokenizer_needs_trust_remote_code_everywhere(tmp_path):
    """Refused with the option to set; with it, built, and the checkpoint's tokenizer loads the
    same way later (training and evaluation use `load_tokenizer`)."""
    from model.from_llm import load_tokenizer

    llm = save_tiny_llm(tmp_path / "llm")
    (llm / "tokenization_remote.py").write_text(REMOTE_TOKENIZER)
    settings = json.loads((llm / "tokenizer_config.json").read_text())
    settings.update(tokenizer_class="RemoteTokenizerFast",
                    auto_map={"AutoTokenizer": [None, "tokenization_remote.RemoteTokenizerFast"]})
    (llm / "tokenizer_config.json").write_text(json.dumps(settings))

    with pytest.raises(ValueError, match="model.trust_remote_code"):
        from_llm(llm, vision=VISION)
    model, tokenizer = from_llm(llm, vision=VISION, trust_remote_code=True)
    assert type(tokenizer).__name__ == "RemoteTokenizerFast"
    model.save_pretrained(tmp_path / "built")
    tokenizer.save_pretrained(tmp_path / "built")
    assert type(load_tokenizer(tmp_path / "built")).__name__ == "RemoteTokenizerFast"
