"""The model part of the demo: build Mono-InternVL from the configured LLM, caption, save, reload.

Later issues put download, filtering, recaptioning and training in front of this; today it proves
the model end to end on the embedded default config, offline.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, ImageDraw

from flows.config import RunConfig, dump_run_config
from flows.report import parameter_table
from model.build import build_model
from model.inference import caption_images
from model.modeling import MonoInternVLForCausalLM
from model.official import load_official, save_official
from model.param_groups import count_parameters
from model.tiny import save_tiny_llm
from pipelines import storage
from pipelines.layout import RunLayout
from pipelines.model_folders import model_folder


def llm_path(config: RunConfig) -> Path:
    """`model.llm_path`, or a tiny LLM written once under the run root (the demo): random, or
    pretrained on the synthetic web's language when `model.tiny_llm.pretrain_steps` > 0."""
    if config.model.llm_path is not None:
        return Path(config.model.llm_path)
    layout, tiny = RunLayout(config.run_root), config.model.tiny_llm
    name, settings = f"tiny-{tiny.family}-{tiny.seed}", {"tiny_llm": tiny.model_dump()}
    if tiny.pretrain_steps:
        from pipelines.synthetic.pretrained import shipped_or
        from pipelines.synthetic.student import pretrain_student

        name = f"{name}-pretrained"
        seed = config.synthetic_web.seed if config.synthetic_web else 0
        settings["trained_on"] = {"web_seed": seed}  # the language it learns is that web's
        # The default's comes pretrained (`pipelines/synthetic/pretrained.py`).
        write = shipped_or(name, settings, lambda local: pretrain_student(local, tiny, seed))
    else:

        def write(local: Path) -> Path:
            return save_tiny_llm(local, tiny)

    return model_folder(layout.llm(), name, settings, write, layout.local_cache("llm"))


def demo_images() -> list[Image.Image]:
    """Two drawn pictures of different aspect ratios, so the demo exercises tiling."""
    wide = Image.new("RGB", (640, 320), "navy")
    ImageDraw.Draw(wide).ellipse((40, 40, 280, 280), fill="red")
    tall = Image.new("RGB", (300, 600), "white")
    ImageDraw.Draw(tall).rectangle((50, 100, 250, 300), fill="green")
    return [wide, tall]


def run_model_demo(config: RunConfig, max_visual_tokens: int = 1280) -> dict:
    """Builds, captions two images, saves HF and official checkpoints and checks both reload."""
    layout = RunLayout(config.run_root)
    storage.write_bytes(dump_run_config(config).encode(), layout.run_config())
    start = llm_path(config)  # first: building the demo's LLM draws random numbers
    torch.manual_seed(0)  # same settings, same initial weights: a rerun finds its checkpoint equal
    model, tokenizer, processor = build_model(config.model, start)
    print(parameter_table(count_parameters(model)))
    images = demo_images()
    captions = caption_images(
        model, tokenizer, processor, images, max_new_tokens=12, max_visual_tokens=max_visual_tokens
    )
    for image, caption in zip(images, captions):
        plan = processor.plan(*image.size, max_visual_tokens=max_visual_tokens)
        print(
            f"{image.size[0]}x{image.size[1]} -> {plan.columns}x{plan.rows} grid, "
            f"{plan.num_tiles} tiles, {plan.num_tokens} visual tokens: {caption!r}"
        )
    settings = {"model": config.model.model_dump(mode="json"), "stage": "init"}

    def save_hf(local: Path) -> None:
        model.save_pretrained(local)
        tokenizer.save_pretrained(local)
        processor.save_pretrained(local)

    cache = layout.local_cache("checkpoints")
    hf_dir = model_folder(layout.checkpoints(), "init", settings, save_hf, cache)
    reloaded = MonoInternVLForCausalLM.from_pretrained(hf_dir)
    same_hf = all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), reloaded.state_dict().values())
    )
    same_official, official_dir = True, "-"
    if not config.model.experts.visual_attention_experts:
        official_dir = model_folder(
            layout.checkpoints(), "init-official", settings,
            lambda local: save_official(model, local, tokenizer), cache)  # fmt: skip
        official = load_official(official_dir).state_dict()
        same_official = all(torch.equal(v, official[k]) for k, v in model.state_dict().items())
    print(
        f"saved {hf_dir} (reload exact: {same_hf}) and {official_dir} (round trip exact: "
        f"{same_official})"
    )
    if not (same_hf and same_official):
        raise RuntimeError("a checkpoint did not reload exactly")
    return {"captions": captions, "checkpoint": layout.init_checkpoint()}
