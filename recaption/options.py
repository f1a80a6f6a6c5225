"""Options of the recaption step: the teacher, its prompts and generation, cleaning, the Ray job."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from model.options import FrozenOptions
from recaption.prompts import DEFAULT_PROMPTS


class GenerationOptions(FrozenOptions):
    """Decoding settings; recorded next to every caption they produced."""

    max_new_tokens: int = Field(48, gt=0)
    """Longest caption in tokens (the paper wants short captions)."""
    do_sample: bool = False
    """Greedy (False) or sampled decoding."""
    temperature: float = Field(1.0, gt=0)
    """Sampling temperature (only with do_sample)."""
    repetition_penalty: float = Field(1.05, ge=1.0)
    """Penalty on repeated tokens; >1 curbs runaway repetition."""
    no_repeat_ngram_size: int = Field(0, ge=0)
    """Forbid repeating n-grams of this size (0: off)."""


class TinyTeacherOptions(FrozenOptions):
    """The tiny InternVL built when no teacher `path` is given (demo)."""

    hidden_size: int = Field(32, gt=0)
    """Language model width."""
    layers: int = Field(2, gt=0)
    """Language model layers."""
    tile_size: int = Field(64, gt=0, multiple_of=32)
    """Tile side in pixels (16-px patches)."""
    lr: float = Field(2e-3, gt=0)
    """Peak learning rate of that training (one-cycle schedule)."""
    train_steps: int = Field(0, ge=0)
    """Steps of training on the synthetic web's images and their clean descriptions, so it knows
    more than the alt-text (as InternVL-8B does in the paper); 0 keeps random weights."""


class VllmEngineOptions(FrozenOptions):
    """How `vllm.LLM` lays the teacher out on its GPUs; none of it changes what a caption says,
    so none of it is in a caption shard's settings."""

    tensor_parallel_size: int = Field(1, ge=1)
    """GPUs one teacher replica spans (set `recaption.gpus_per_actor` to the same number)."""
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    """Share of each GPU's memory vLLM may take for weights and KV cache."""
    max_model_len: int | None = Field(None, gt=0)
    """Longest prompt + caption in tokens; None: the checkpoint's context length."""
    max_num_seqs: int | None = Field(None, gt=0)
    """Sequences decoded at once; None: vLLM's default."""
    images_per_prompt: int = Field(1, ge=1)
    """`limit_mm_per_prompt` images (the recaption prompt holds one)."""


class TeacherOptions(FrozenOptions):
    """The captioning teacher (InternVL-8B in the paper)."""

    name: str = "internvl"
    """Short name, used in output paths (captions/<name>/<source>/...)."""
    path: str | None = None
    """Local Hugging Face checkpoint of an InternVL model; None builds a tiny random one (demo)."""
    backend: Literal["auto", "transformers", "vllm"] = "auto"
    """auto: vLLM when it is installed and teacher actors get GPUs, else transformers."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """auto: bfloat16 on GPU, float32 on CPU (vLLM: the checkpoint's dtype)."""
    trust_remote_code: bool = False
    """Run the checkpoint's own code when loading its tokenizer, processor and model (needed by
    original-format InternVL checkpoints, which only the vLLM backend runs)."""
    vllm: VllmEngineOptions = VllmEngineOptions()
    """vLLM engine settings (backend vllm)."""
    max_tiles: int = Field(6, ge=1)
    """Dynamic-resolution tiles per image (1 = a single 448-px view, fastest)."""
    prompts: list[str] = list(DEFAULT_PROMPTS)
    """Prompt variants; each image gets one, chosen from its sample id (stable across reruns)."""
    generation: GenerationOptions = GenerationOptions()
    """Decoding settings."""
    tiny: TinyTeacherOptions = TinyTeacherOptions()
    """Shape and training of the tiny teacher built when `path` is null."""

    @model_validator(mode="after")
    def _check_prompts(self) -> TeacherOptions:
        if not self.prompts or any(not p.strip() for p in self.prompts):
            raise ValueError("prompts must be a non-empty list of non-empty strings")
        return self


class CleaningOptions(FrozenOptions):
    """What a teacher caption must look like to replace the alt-text."""

    min_words: int = Field(3, ge=1)
    """Fewer words than this is rejected as empty."""
    max_chars: int = Field(300, gt=0)
    """Longer captions are cut at the last sentence (or word) boundary before this."""
    max_repeat_fraction: float = Field(0.5, gt=0, le=1)
    """Rejected as runaway repetition when one word or bigram makes up more than this share."""


class RecaptionJobOptions(FrozenOptions):
    """How the Ray Data job is laid out."""

    batch_size: int = Field(16, gt=0)
    """Images per teacher call."""
    actors: int = Field(1, gt=0)
    """Teacher actors (model replicas); Ray Data spreads them over the cluster's nodes."""
    gpus_per_actor: float = Field(0.0, ge=0)
    """GPUs per teacher actor (0 on CPU machines)."""
    cpus_per_actor: float = Field(0.5, gt=0)
    """CPUs per teacher actor (fractional on small machines, or Ray Data deadlocks)."""
    torch_threads: int | None = Field(None, gt=0)
    """CPU threads of a CPU teacher; None keeps Ray's choice (its CPU share, at least 1)."""
    preprocess_cpus: float = Field(0.25, gt=0)
    """CPUs per preprocessing task: decode + InternVL tiling, which is the known bottleneck."""
    preprocess_batch_size: int = Field(32, gt=0)
    """Images per preprocessing task."""
    sources: list[str] = []
    """Sources to recaption (empty: every source of the run)."""
    samples: int | None = Field(None, gt=0)
    """Captions to make, a seeded draw of the kept samples (the paper: 258M); None: every one."""
    seed: int = Field(0, ge=0)
    """Seed of that draw: the same seed keeps the same subset."""
