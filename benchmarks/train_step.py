"""Training step time: the Ray Train + DeepSpeed path against a plain single-process torch loop.

One run, the same model (hidden 512, 4 layers, 448-px tiles) and the same batch: 1,024-token packs
of two samples, each one 256-token image and about 250 text tokens (half visual). Each side runs an
S1.1 step (patch embedding + visual FFN experts train, the text path is frozen) and an S2 step
(everything trains), AdamW, same threads. The Ray Train side is one worker (ZeRO 0: one worker has
nothing to shard; fp32 on CPU); its step time is the compute time the loop reports (forward +
backward + optimiser), mean over steps after the first. Last lines: `delta_vs_full_plain`
(S1.1 ÷ S2, plain), `delta_vs_full` (S1.1 ÷ S2, Ray Train + DeepSpeed; goal ≤ plain + 0.05),
`train_vs_plain` (Ray Train + DeepSpeed ÷ plain on S1.1; goal ≤ 1.15 at one worker).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import tempfile
import time
from pathlib import Path

import torch
import webdataset as wds
from PIL import Image

from pipelines.stages.render import conversation

CAPTION = " ".join(f"a red circle and a blue square number {i}," for i in range(12))


def _setup(root: Path):
    from model.configuration import MonoInternVLConfig
    from model.modeling import MonoInternVLForCausalLM
    from model.preprocessing import MonoInternVLImageProcessor
    from model.tiny import build_tiny_tokenizer
    from pipelines.completion import CompletionLog
    from pipelines.layout import RunLayout
    from pipelines.model_folders import model_folder

    tokenizer = build_tiny_tokenizer(vocab_size=2048)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<IMG_CONTEXT>", "<img>", "</img>")}
    config = MonoInternVLConfig(
        vocab_size=len(tokenizer), hidden_size=512, intermediate_size=2048, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=8, patch_size=14, tile_size=448,
        vision_hidden_size=512, max_tiles=1, use_thumbnail=False,
        image_token_id=ids["<IMG_CONTEXT>"], image_start_token_id=ids["<img>"],
        image_end_token_id=ids["</img>"], pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    model = MonoInternVLForCausalLM(config)
    processor = MonoInternVLImageProcessor.from_model_config(config)
    layout = RunLayout(root / "run")

    def save(local):
        model.save_pretrained(local)
        tokenizer.save_pretrained(local)
        processor.save_pretrained(local)

    model_folder(layout.checkpoints(), "init", {"benchmark": 1}, save, root / "cache")
    folder = root / "run" / "stages" / "same"
    folder.mkdir(parents=True)
    image = io.BytesIO()
    Image.new("RGB", (448, 448), "red").save(image, format="JPEG")
    talk = json.dumps({"conversations": conversation("describe", CAPTION)}).encode()
    with wds.TarWriter(str(folder / "shard-000000.tar")) as tar:
        for i in range(64):
            tar.write({"__key__": f"{i:012d}", "jpg": image.getvalue(), "json": talk})
    # The manifest `evip stages` records (training keys its settings on the shards' sha256).
    digest = hashlib.sha256((folder / "shard-000000.tar").read_bytes()).hexdigest()
    shard = {"name": "shard-000000", "samples": 64, "sha256": digest}
    for name in ("S1.1", "S2"):
        CompletionLog(layout.stages()).write(name, {"bench": name}, {"shards": [shard]})
        (root / "run" / "stages" / name).symlink_to(folder)
    return layout, tokenizer, processor


def plain_step_seconds(start: Path, groups: list[str], batch: dict, steps: int) -> float:
    from model.modeling import MonoInternVLForCausalLM
    from model.param_groups import set_trainable

    torch.manual_seed(0)
    model = MonoInternVLForCausalLM.from_pretrained(start).train()
    set_trainable(model, groups)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times = []
    for step in range(steps):
        started = time.perf_counter()
        loss = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                     sample_ids=batch["sample_ids"], pixel_values=batch["pixel_values"],
                     labels=batch["labels"], loss_weights=batch["loss_weights"],
                     full_logits=False).loss  # the loss the training loop takes
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step:
            times.append(time.perf_counter() - started)
    return sum(times) / len(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from pipelines.loader.stage_loader import StageLoader
    from pipelines.ray_runtime import RayOptions, ensure_ray
    from pipelines.train.job import train_stage
    from pipelines.train.schedule import GROUPS, TrainOptions, TrainStage

    with tempfile.TemporaryDirectory() as folder:
        layout, tokenizer, processor = _setup(Path(folder))
        start = Path(layout.checkpoints()) / "init"
        shard = str(Path(layout.stages("same")) / "shard-000000.tar")
        batch = next(iter(StageLoader([shard], tokenizer, processor, max_patches=256,
                                      max_tokens=1024, buffer_size=2)))  # fmt: skip
        groups = {"S1.1": ["patch_embed", "visual_ffn"], "S2": list(GROUPS)}
        # Plain runs before and after the framework's, averaged: this machine's speed drifts
        # between minutes, and a ratio must compare like with like.
        before = {n: plain_step_seconds(start, g, batch, args.steps) for n, g in groups.items()}
        ensure_ray(RayOptions(num_cpus=args.threads))
        framework = {}
        for name, trainable in groups.items():
            stage = TrainStage(name=name, trainable=trainable, steps=args.steps, global_batch=1,
                               max_packed_tokens=1024, checkpoint_every=10**6, zero_stage=0,
                               optimizer={"warmup_ratio": 0.0, "lr": 1e-4})  # fmt: skip
            options = TrainOptions(stages=[stage], workers=1, cpus_per_worker=args.threads)
            report = train_stage(layout, options, stage, str(start), max_patches=256)
            framework[name] = report["metrics"]["mean_step_seconds"]
        after = {n: plain_step_seconds(start, g, batch, args.steps) for n, g in groups.items()}
        plain = {n: (before[n] + after[n]) / 2 for n in groups}
    print(f"pack: {batch['num_tokens']} tokens, {batch['num_samples']} samples")
    for name in groups:
        print(f"{name}: plain {before[name] * 1000:.0f} / {after[name] * 1000:.0f} ms "
              f"(before / after), Ray Train + DeepSpeed {framework[name] * 1000:.0f} ms per step")
    print(f"delta_vs_full_plain: {plain['S1.1'] / plain['S2']:.3f}")
    print(f"delta_vs_full: {framework['S1.1'] / framework['S2']:.3f}")
    print(f"train_vs_plain: {framework['S1.1'] / plain['S1.1']:.3f}")


if __name__ == "__main__":
    main()
