"""The Mono-InternVL model: config, visual tokenizer, MMoE decoder, conversion, parameter groups.

Single-device PyTorch; parallelism (DeepSpeed, Ray Train) is applied from outside. Names load on
first use, so a data worker that only needs `model.options` never imports torch or transformers;
`model.modeling` registers the classes with transformers' Auto classes when it loads.
"""

from importlib import import_module

_WHERE = {
    "ExpertOptions": "model.options",
    "ModelOptions": "model.options",
    "TinyLLMOptions": "model.options",
    "VisionOptions": "model.options",
    "MonoInternVLConfig": "model.configuration",
    "MonoInternVLForCausalLM": "model.modeling",
    "MonoInternVLModel": "model.modeling",
    "MonoInternVLImageProcessor": "model.preprocessing",
    "plan_tiles": "model.preprocessing",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'model' has no attribute {name!r}")
    return getattr(import_module(_WHERE[name]), name)
