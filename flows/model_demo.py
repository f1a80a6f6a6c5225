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


def demo_images() -> list[Image.Image]:
    """Two drawn pictures of different aspect ratios, so the demo exercises tiling."""
    wide = Image.new("RGB", (640, 320), "navy")
    ImageDraw.Draw(wide).ellipse((40, 40, 280, 280), fill="red")
    tall = Image.new("RGB", (300, 600), "white")
    ImageDraw.Draw(tall).rectangle((50, 100, 250, 300), fill="green")
    return [wide, tall]


def run_model_demo(config: RunConfig, max_visual_tokens: int = 1280) -> dict:
    """Builds, captions two images, saves HF and official checkpoints and checks both reload."""
    root = Path(config.run_root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "run_config.yaml").write_text(dump_run_config(config))
    model, tokenizer, processor = build_model(config.model, root / "llm")
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
    hf_dir, official_dir = root / "checkpoints" / "init", root / "checkpoints" / "init-official"
    model.save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    processor.save_pretrained(hf_dir)
    reloaded = MonoInternVLForCausalLM.from_pretrained(hf_dir)
    same_hf = all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), reloaded.state_dict().values())
    )
    same_official = True
    if not config.model.experts.visual_attention_experts:
        save_official(model, official_dir)
        official = load_official(official_dir).state_dict()
        same_official = all(torch.equal(v, official[k]) for k, v in model.state_dict().items())
    print(
        f"saved {hf_dir} (reload exact: {same_hf}) and {official_dir} (round trip exact: "
        f"{same_official})"
    )
    if not (same_hf and same_official):
        raise RuntimeError("a checkpoint did not reload exactly")
    return {"captions": captions, "checkpoint": str(hf_dir)}
