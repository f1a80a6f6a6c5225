"""Conversion to and from the released Mono-InternVL-2B checkpoint layout (`InternVLChatModel`).

Official = `vision_model.embeddings.*` + `mlp1.{0,1,3}` + `language_model.` + InternLM2's layout
with `feed_forward_ve` visual experts. The round trip evip -> official -> evip is exact.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from model.configuration import MonoInternVLConfig
from model.from_llm import load_state_dict
from model.internlm2_layout import from_internlm2, to_internlm2
from model.modeling import MonoInternVLForCausalLM

_VISION = {
    "model.vision.patch_embedding": "vision_model.embeddings.patch_embedding",
    "model.vision.projector.0": "mlp1.0",
    "model.vision.projector.1": "mlp1.1",
    "model.vision.projector.3": "mlp1.3",
}
_VISION_PARAMS = {
    "model.vision.class_embedding": "vision_model.embeddings.class_embedding",
    "model.vision.position_embedding": "vision_model.embeddings.position_embedding",
}
LLM_PREFIX = "language_model."


def _rename_vision(state: dict, modules: dict, params: dict) -> dict:
    out = {}
    for name, tensor in state.items():
        if name in params:
            out[params[name]] = tensor
            continue
        stem, _, suffix = name.rpartition(".")
        if stem in modules:
            out[f"{modules[stem]}.{suffix}"] = tensor
    return out


def to_official_state(state: dict[str, torch.Tensor], config: MonoInternVLConfig) -> dict:
    """evip state dict -> official names (InternLM2 `wqkv` packing under `language_model.`)."""
    if config.visual_attention_experts:
        raise ValueError(
            "the Mono-InternVL-2B layout has no visual attention experts; "
            "set visual_attention_experts=False to convert"
        )
    llm = to_internlm2(state, config.num_key_value_heads, config.head_dim)
    if config.tie_word_embeddings:
        llm.setdefault("output.weight", state["model.embed_tokens.weight"])
    out = {LLM_PREFIX + k: v for k, v in llm.items()}
    out.update(_rename_vision(state, _VISION, _VISION_PARAMS))
    return out


def from_official_state(state: dict[str, torch.Tensor], config: MonoInternVLConfig) -> dict:
    """Official names -> evip state dict (inverse of `to_official_state`)."""
    llm = {k[len(LLM_PREFIX) :]: v for k, v in state.items() if k.startswith(LLM_PREFIX)}
    out = from_internlm2(
        llm, config.num_attention_heads, config.num_key_value_heads, config.head_dim
    )
    inverse_modules = {v: k for k, v in _VISION.items()}
    inverse_params = {v: k for k, v in _VISION_PARAMS.items()}
    out.update(_rename_vision(state, inverse_modules, inverse_params))
    return out


def to_official_config(config: MonoInternVLConfig) -> dict:
    """The `InternVLChatConfig`-shaped config.json of the released checkpoint."""
    return {
        "architectures": ["InternVLChatModel"],
        "model_type": "internvl_chat",
        "downsample_ratio": config.downsample_ratio,
        "force_image_size": config.tile_size,
        "dynamic_image_size": True,
        "min_dynamic_patch": config.min_tiles,
        "max_dynamic_patch": config.max_tiles,
        "use_thumbnail": config.use_thumbnail,
        "ps_version": "v2",
        "template": "internlm2-chat",
        "img_context_token_id": config.image_token_id,
        "img_start_token_id": config.image_start_token_id,
        "img_end_token_id": config.image_end_token_id,
        # The patch embedding has no layers to pick from: the official forward reads its output.
        "select_layer": -1,
        "vision_config": {
            "architectures": ["InternVisionPatchModel"],
            "model_type": "intern_vit_patch",
            "hidden_size": config.vision_hidden_size,
            "image_size": config.tile_size,
            "patch_size": config.patch_size,
            "num_channels": config.num_channels,
        },
        "llm_config": {
            "architectures": ["InternLM2VEForCausalLM"],
            "model_type": "internlm2",
            "vocab_size": config.vocab_size,
            "hidden_size": config.hidden_size,
            "intermediate_size": config.intermediate_size,
            "num_hidden_layers": config.num_hidden_layers,
            "num_attention_heads": config.num_attention_heads,
            "num_key_value_heads": config.num_key_value_heads,
            "hidden_act": config.hidden_act,
            "rms_norm_eps": config.rms_norm_eps,
            "rope_theta": config.rope_theta,
            "rope_scaling": _internlm2_rope_scaling(config.rope_scaling),
            "max_position_embeddings": config.max_position_embeddings,
            "bias": config.attention_bias,
            "tie_word_embeddings": False,
            "bos_token_id": config.bos_token_id,
            "eos_token_id": config.eos_token_id,
            "pad_token_id": config.pad_token_id,
        },
    }


def official_layout_fits(config: MonoInternVLConfig) -> bool:
    """Whether the official (InternLM2-based) layout can hold this model: no attention experts,
    and RoPE that InternLM2's code knows (default, dynamic NTK, linear)."""
    rope_type = (config.rope_scaling or {}).get("rope_type", "default")
    return not config.visual_attention_experts and rope_type in ("default", "dynamic", "linear")


def _internlm2_rope_scaling(scaling: dict | None) -> dict | None:
    """InternLM2's remote code reads `{"type": "dynamic"|"linear", "factor": f}`."""
    if not scaling:
        return None
    if scaling["rope_type"] not in ("dynamic", "linear"):
        raise ValueError(f"the official InternLM2 layout has no {scaling['rope_type']!r} RoPE")
    return {"type": scaling["rope_type"], "factor": scaling["factor"]}


def _rope_scaling_from_internlm2(scaling: dict | None) -> dict | None:
    if not scaling:
        return None
    return {"rope_type": scaling.get("type", scaling.get("rope_type")), "factor": scaling["factor"]}


def from_official_config(official: dict) -> MonoInternVLConfig:
    """Reads an `InternVLChatConfig`-shaped dict back into a `MonoInternVLConfig`."""
    llm, vision = official["llm_config"], official["vision_config"]
    return MonoInternVLConfig(
        vocab_size=llm["vocab_size"],
        hidden_size=llm["hidden_size"],
        intermediate_size=llm["intermediate_size"],
        num_hidden_layers=llm["num_hidden_layers"],
        num_attention_heads=llm["num_attention_heads"],
        num_key_value_heads=llm.get("num_key_value_heads"),
        hidden_act=llm.get("hidden_act", "silu"),
        rms_norm_eps=llm.get("rms_norm_eps", 1e-6),
        rope_theta=float(llm.get("rope_theta", 10000.0)),
        rope_scaling=_rope_scaling_from_internlm2(llm.get("rope_scaling")),
        max_position_embeddings=llm.get("max_position_embeddings", 8192),
        attention_bias=bool(llm.get("bias", False)),
        attention_out_bias=bool(llm.get("bias", False)),
        bos_token_id=llm.get("bos_token_id"),
        eos_token_id=llm.get("eos_token_id"),
        pad_token_id=llm.get("pad_token_id"),
        patch_size=vision["patch_size"],
        tile_size=vision.get("image_size", official.get("force_image_size", 448)),
        vision_hidden_size=vision["hidden_size"],
        num_channels=vision.get("num_channels", 3),
        downsample_ratio=official.get("downsample_ratio", 0.5),
        min_tiles=official.get("min_dynamic_patch", 1),
        max_tiles=official.get("max_dynamic_patch", 12),
        use_thumbnail=official.get("use_thumbnail", True),
        visual_ffn_experts=True,
        visual_attention_experts=False,
        image_token_id=official.get("img_context_token_id"),
        image_start_token_id=official.get("img_start_token_id"),
        image_end_token_id=official.get("img_end_token_id"),
    )


def save_official(model: MonoInternVLForCausalLM, path: str | Path, tokenizer=None) -> Path:
    """Writes `model` as an official-layout checkpoint directory: config.json (its `template`
    names the chat template), safetensors, generation_config.json and, given the tokenizer, its
    files — what the harnesses' InternVL loaders (VLMEvalKit, lmms-eval) read beside the weights.
    The released remote-code modules (`modeling_*.py`) come from the official checkpoint."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(to_official_state(state, model.config), path / "model.safetensors")
    (path / "config.json").write_text(json.dumps(to_official_config(model.config), indent=2))
    model.generation_config.save_pretrained(path)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path


def load_official(path: str | Path) -> MonoInternVLForCausalLM:
    """Builds an evip model from an official-layout checkpoint directory."""
    path = Path(path)
    config = from_official_config(json.loads((path / "config.json").read_text()))
    model = MonoInternVLForCausalLM(config)
    state = from_official_state(load_state_dict(path), config)
    model.load_state_dict(state, strict=True)
    return model.eval()
