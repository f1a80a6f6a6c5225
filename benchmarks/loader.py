"""The packed stage loader on S1.1-shaped data at the stage's max patches, against a training step.

Stage shards are written like the builder writes them: drawn scenes of varied sizes as JPEG and a
one-sentence caption, under the S1.1 prompt. The loader (decode, InternVL tiling at 448 px with
max 1,280 patches, chat template, answer-only labels, packing) runs in one process with one
torch thread: its samples/s and packing efficiency. A training step of the benchmark model
(hidden 512, 4 layers, 1,024-token packs, one thread: forward + backward + AdamW) gives the
samples/s training consumes at the loader's mean sample length. Last lines:
`packing_efficiency` (non-padding share of the packs; goal ≥ 0.97) and `loader_vs_step`
(loader samples/s ÷ step samples/s, both on one core; goal ≥ 3).
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import torch
import webdataset as wds


def write_s11_shards(folder: Path, samples: int, per_shard: int = 100) -> list[str]:
    from pipelines.stages.render import conversation
    from pipelines.stages.spec import CONCEPT_PROMPT
    from pipelines.synthetic.scenes import make_scene, render

    urls = []
    for shard in range(0, samples, per_shard):
        url = str(folder / f"shard-{shard // per_shard:06d}.tar")
        with wds.TarWriter(url) as tar:
            for i in range(shard, min(samples, shard + per_shard)):
                scene = make_scene(3, i)
                buffer = io.BytesIO()
                render(scene).save(buffer, format="JPEG", quality=90)
                talk = conversation(CONCEPT_PROMPT, scene.alt_text or scene.description)
                tar.write({"__key__": f"{i:012d}", "jpg": buffer.getvalue(),
                           "json": json.dumps({"conversations": talk}).encode()})  # fmt: skip
        urls.append(url)
    return urls


def _setup(vocab: int):
    from model.configuration import MonoInternVLConfig
    from model.preprocessing import MonoInternVLImageProcessor
    from model.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(vocab_size=vocab)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<IMG_CONTEXT>", "<img>", "</img>")}
    config = MonoInternVLConfig(
        vocab_size=len(tokenizer), hidden_size=512, intermediate_size=2048, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=8, patch_size=14, tile_size=448,
        vision_hidden_size=512, max_tiles=12, image_token_id=ids["<IMG_CONTEXT>"],
        image_start_token_id=ids["<img>"], image_end_token_id=ids["</img>"],
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    return tokenizer, MonoInternVLImageProcessor.from_model_config(config), config


def measure_loader(urls, tokenizer, processor, max_tokens: int) -> dict:
    from pipelines.loader.stage_loader import StageLoader

    loader = StageLoader(urls, tokenizer, processor, max_patches=1280, max_tokens=max_tokens,
                         buffer_size=64, report=lambda message: None)  # fmt: skip
    start, samples, tokens, capacity = time.perf_counter(), 0, 0, 0
    for pack in loader:
        samples += pack["num_samples"]
        tokens += pack["num_tokens"]
        capacity += pack["input_ids"].shape[1]
    seconds = time.perf_counter() - start
    return {"samples_per_s": samples / seconds, "efficiency": tokens / capacity,
            "mean_tokens": tokens / samples, "samples": samples, "seconds": seconds}


def measure_step(config, steps: int, pack_tokens: int) -> float:
    """Seconds per forward + backward + optimizer step on one 1,024-token pack."""
    from model.modeling import MonoInternVLForCausalLM

    torch.manual_seed(0)
    model = MonoInternVLForCausalLM(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tiles, per_tile = 3, config.tokens_per_tile
    image = [config.image_start_token_id] + [config.image_token_id] * tiles * per_tile + [
        config.image_end_token_id]  # fmt: skip
    text = torch.randint(10, 200, (pack_tokens - len(image),)).tolist()
    ids = torch.tensor([image + text])
    batch = {"input_ids": ids, "labels": ids.clone(),
             "pixel_values": torch.randn(tiles, 3, config.tile_size, config.tile_size)}
    timings = []
    for step in range(steps + 1):
        start = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step:  # the first step warms up
            timings.append(time.perf_counter() - start)
    return sum(timings) / len(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=600)
    parser.add_argument("--pack-tokens", type=int, default=8192, help="loader pack budget")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=2048)
    args = parser.parse_args()
    torch.set_num_threads(1)
    tokenizer, processor, config = _setup(args.vocab)
    with tempfile.TemporaryDirectory() as folder:
        urls = write_s11_shards(Path(folder), args.samples)
        loader = measure_loader(urls, tokenizer, processor, args.pack_tokens)
    step_seconds = measure_step(config, args.steps, 1024)
    step_samples = 1024 / loader["mean_tokens"] / step_seconds
    print(f"loader: {loader['samples']} samples in {loader['seconds']:.1f} s = "
          f"{loader['samples_per_s']:.1f} samples/s, mean {loader['mean_tokens']:.0f} tokens "
          f"per sample, {args.pack_tokens}-token packs")  # fmt: skip
    print(f"step: {step_seconds * 1000:.0f} ms per 1,024-token pack (hidden 512, 4 layers, one "
          f"thread) = {step_samples:.2f} samples/s")  # fmt: skip
    print(f"packing_efficiency: {loader['efficiency']:.4f}")
    print(f"loader_vs_step: {loader['samples_per_s'] / step_samples:.2f}")


if __name__ == "__main__":
    main()
