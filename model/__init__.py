"""The Mono-InternVL model: config, visual tokenizer, MMoE decoder, conversion, parameter groups.

Single-device PyTorch; parallelism (DeepSpeed, Ray Train) is applied from outside.
"""

from transformers import AutoConfig, AutoModelForCausalLM

from model.configuration import MonoInternVLConfig
from model.modeling import MonoInternVLForCausalLM, MonoInternVLModel
from model.options import ExpertOptions, ModelOptions, TinyLLMOptions, VisionOptions
from model.preprocessing import MonoInternVLImageProcessor, plan_tiles

AutoConfig.register(MonoInternVLConfig.model_type, MonoInternVLConfig, exist_ok=True)
AutoModelForCausalLM.register(MonoInternVLConfig, MonoInternVLForCausalLM, exist_ok=True)

__all__ = [
    "ExpertOptions",
    "ModelOptions",
    "MonoInternVLConfig",
    "MonoInternVLForCausalLM",
    "MonoInternVLImageProcessor",
    "MonoInternVLModel",
    "TinyLLMOptions",
    "VisionOptions",
    "plan_tiles",
]
