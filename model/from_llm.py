"""Embedding visual experts into a pretrained LLM: `from_llm(path)`.

Reads a local Hugging Face Llama / Qwen2 / Mistral / InternLM2 checkpoint, keeps its weights as the
text path, and initialises each visual expert as a copy of the text weights it shadows (paper
section 4.2), so with no image in the input the model computes exactly what the LLM computed.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from model.attention import rope_scaling_errors
from model.chat import add_special_tokens
from model.configuration import MonoInternVLConfig
from model.internlm2_layout import from_internlm2
from model.modeling import MonoInternVLForCausalLM
from model.options import ExpertOptions, VisionOptions

LLAMA_FAMILY = ("llama", "qwen2", "mistral")
SUPPORTED = (*LLAMA_FAMILY, "internlm2")


def _rope(cfg: dict) -> tuple[float, dict | None]:
    """(theta, scaling) of a config.json dict: transformers' `rope_parameters` (v5), or the older
    `rope_scaling` + `rope_theta` (InternLM2's remote code: `{"type": "dynamic", "factor": 2}`)."""
    rope = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    rope_type = rope.pop("rope_type", rope.pop("type", "default"))
    theta = float(rope.pop("rope_theta", cfg.get("rope_theta", 10000.0)))
    scaling = None if rope_type == "default" else {"rope_type": rope_type, **rope}
    errors = rope_scaling_errors(scaling)
    if errors:
        raise ValueError("; ".join(errors))
    return theta, scaling


def llm_shape(cfg: dict) -> dict:
    """`MonoInternVLConfig` fields for the LLM described by a config.json dict."""
    model_type = cfg.get("model_type")
    if model_type not in SUPPORTED:
        raise ValueError(f"model_type {model_type!r} is not supported; expected one of {SUPPORTED}")
    if cfg.get("use_sliding_window") or (model_type == "mistral" and cfg.get("sliding_window")):
        raise ValueError("sliding-window attention is not supported")
    heads = cfg["num_attention_heads"]
    shape = dict(
        vocab_size=cfg["vocab_size"],
        hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"],
        num_hidden_layers=cfg["num_hidden_layers"],
        num_attention_heads=heads,
        num_key_value_heads=cfg.get("num_key_value_heads") or heads,
        head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
        hidden_act=cfg.get("hidden_act", "silu"),
        rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
        rope_theta=_rope(cfg)[0],
        rope_scaling=_rope(cfg)[1],
        max_position_embeddings=cfg.get("max_position_embeddings", 4096),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        bos_token_id=cfg.get("bos_token_id"),
        eos_token_id=cfg.get("eos_token_id"),
        pad_token_id=cfg.get("pad_token_id"),
    )
    if model_type == "qwen2":
        shape.update(attention_bias=True, attention_out_bias=False)
    elif model_type == "internlm2":
        bias = bool(cfg.get("bias", False))
        shape.update(attention_bias=bias, attention_out_bias=bias)
    else:
        bias = bool(cfg.get("attention_bias", False))
        shape.update(
            attention_bias=bias, attention_out_bias=bias, mlp_bias=bool(cfg.get("mlp_bias"))
        )
    return shape


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint directory (single or sharded safetensors, or a .bin)."""
    index = path / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state = {}
        for name in files:
            state.update(load_file(path / name))
        return state
    if (path / "model.safetensors").exists():
        return load_file(path / "model.safetensors")
    if (path / "pytorch_model.bin").exists():
        return torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"no model.safetensors(.index.json) or pytorch_model.bin in {path}")


def copy_text_weights_to_experts(model: MonoInternVLForCausalLM) -> None:
    """Initialises every visual expert from the text weights it shadows."""
    with torch.no_grad():
        for layer in model.model.layers:
            if layer.visual_mlp is not None:
                layer.visual_mlp.load_state_dict(layer.mlp.state_dict())
            attn = layer.self_attn
            if attn.has_visual_experts:
                for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
                    getattr(attn, f"visual_{name}").load_state_dict(
                        getattr(attn, name).state_dict()
                    )


def _resize_vocab(model: MonoInternVLForCausalLM, vocab_size: int) -> None:
    """Grows embeddings and LM head for added tokens; new rows start at the mean row."""
    old = model.config.vocab_size
    if vocab_size <= old:
        return
    model.resize_token_embeddings(vocab_size, mean_resizing=True)
    model.config.vocab_size = vocab_size


def config_for(llm_cfg: dict, experts: ExpertOptions, vision: VisionOptions,
               **more) -> MonoInternVLConfig:  # fmt: skip
    """The Mono-InternVL config around the LLM of a config.json dict."""
    # The options' fields are the config's fields (`MonoInternVLConfig.vision_options` inverts it).
    return MonoInternVLConfig(**llm_shape(llm_cfg), **vision.model_dump(), **experts.model_dump(),
                              **more)


def _llm_tokenizer(path: Path, trust_remote_code: bool):
    """The LLM's tokenizer; one that is remote code fails with the option to set."""
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except ValueError as error:
        if "trust_remote_code" not in str(error) or trust_remote_code:
            raise
        raise ValueError(f"{path}: its tokenizer is remote code; set model.trust_remote_code: "
                         "true to run it") from error


def load_tokenizer(folder: str | Path):
    """The tokenizer saved beside a Mono-InternVL checkpoint, loaded as the model was built
    (`tokenizer_remote_code`: InternLM2's tokenizer is remote code)."""
    remote = json.loads((Path(folder) / "config.json").read_text()).get("tokenizer_remote_code")
    return AutoTokenizer.from_pretrained(folder, trust_remote_code=bool(remote))


def from_llm(
    path: str | Path,
    experts: ExpertOptions = ExpertOptions(),
    vision: VisionOptions = VisionOptions(),
    tokenizer=None,
    dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
):
    """Builds Mono-InternVL from a pretrained LLM directory.

    Args:
        path: a local Hugging Face checkpoint directory (config.json + weights).
        experts: which visual experts to embed.
        vision: visual tokenizer geometry.
        tokenizer: the LLM's tokenizer; loaded from `path` when None. Missing image / grounding /
            chat tokens are added and the vocabulary grows to hold them.
        dtype: parameter dtype.
        trust_remote_code: run the checkpoint's own tokenizer code (InternLM2's); recorded in the
            model's config for every later load (`load_tokenizer`).

    Returns:
        (model, tokenizer), the model in eval mode with the special-token ids in its config.
    """
    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} has no config.json: not a Hugging Face checkpoint")
    llm_cfg = json.loads((path / "config.json").read_text())
    model_type = llm_cfg.get("model_type")
    llm_shape(llm_cfg)  # an unsupported LLM fails here, before anything is loaded
    if tokenizer is None:
        tokenizer = _llm_tokenizer(path, trust_remote_code)
    token_ids = add_special_tokens(tokenizer)
    config = config_for(llm_cfg, experts, vision)
    state = load_state_dict(path)
    if model_type == "internlm2":
        state = from_internlm2(
            state, config.num_attention_heads, config.num_key_value_heads, config.head_dim
        )
    config.tokenizer_remote_code = trust_remote_code
    model = MonoInternVLForCausalLM(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    unexpected = [k for k in unexpected if "rotary" not in k]
    text_missing = [
        k for k in missing
        if not k.startswith("model.vision.") and ".visual_" not in k
        and not (k == "lm_head.weight" and config.tie_word_embeddings)
    ]  # fmt: skip
    if text_missing or unexpected:
        raise ValueError(
            f"{path}: weights do not match a {model_type} of this shape; "
            f"missing {text_missing[:5]}, unexpected {unexpected[:5]}"
        )
    model.tie_weights()
    copy_text_weights_to_experts(model)
    _resize_vocab(model, len(tokenizer))
    model.set_image_token_ids(token_ids["<IMG_CONTEXT>"], token_ids["<img>"], token_ids["</img>"])
    if model.config.pad_token_id is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(dtype).eval(), tokenizer
