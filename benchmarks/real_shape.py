"""Training pieces at the paper's LLM shape (InternLM2-1.8B: hidden 2048, 16 query / 8 key-value
heads of 128, FFN 8192, vocabulary 92,544), on this machine's CPU, side by side in one run.

Packs hold 8 samples, each half visual (one image span) and about 5% supervised tokens. Times are
medians of interleaved rounds (`benchmarks.timing`). Memory is the peak a variant adds above what
is held before the measured call (parameters, inputs, gradients pre-allocated), after one call at
256 tokens has set up the libraries. On the CPU (fp32, the `per_sample` path) that is the peak
resident set, each variant in a fresh process so no variant hides another (CPU torch keeps no
allocator statistics, and the profiler's memory events miss backward); glibc's mmap threshold is
fixed at 64 kB there, so tensors are mapped and unmapped on their own and the resident set
follows the live ones. With `--device cuda` (the default where a GPU is visible) everything runs
in bf16 with the packed path `auto` picks there (`flash_varlen` with flash-attn, else `flex`),
memory is the caching allocator's peak (`torch.cuda.max_memory_allocated`) in this process, and
each timed call ends with a device synchronize.

Last lines (goals in the issue):
- `attention_packed_vs_causal`: fwd+bwd of the attention over a 4,096-token pack of 8 samples
  with the CPU path (`per_sample`) / plain causal SDPA over the same 4,096 tokens (<= 0.5);
- `attention_memory_growth`: that packed attention's added peak at 8,192 tokens / at 4,096 (<= 2.3);
- `loss_memory_vs_full`: memory the loss adds (fwd+bwd from the last hidden state, LM head frozen)
  with supervised-only logits / full logits, 4,096 tokens, 5% supervised (<= 0.2);
- `checkpointing_memory`: a training step's activation memory with activation checkpointing /
  without, 4 layers, 2,048-token pack (<= 0.5);
- `mmoe_vs_dense_1p8b`: an MMoE decoder layer fwd+bwd / a dense one, 1,024-token half-visual
  pack of 8 samples, each call a training step's (gradients set to None first): the median of
  per-round ratios of the two calls made back to back, in CPU seconds on the CPU (every thread's;
  the wall-clock ratio is printed above it) (<= 1.02).

The MMoE pair is timed on the CPU in a fresh process whose allocator keeps freed memory for reuse
(glibc: no mmap, no trim), as a GPU's caching allocator does. With glibc's default every tensor
over 32 MB is a fresh mapping the kernel zeroes page by page on first touch, and MMoE writes twice
the FFN weight gradients (a text and a visual expert, 3 x 64 MB more per call): that page
zeroing, not the layer's arithmetic, read as 1-2 % here (30 rounds each, same code, one after the
other: median 1.024 and totals 1.019 with the default allocator, 1.012 and 1.004 with freed memory
kept; the profiler's GEMM seconds alone: 4,833 dense vs 4,842 MMoE on one thread). A shared
machine's speed moves by 10-30 % between consecutive 3-second calls, so one run resolves the
figure to about +-2 % at best; `--rounds` buys more.
"""

from __future__ import annotations

import argparse
import gc
import time
from dataclasses import dataclass

import torch

from benchmarks.fresh_process import (
    KEEP_FREED_MEMORY,
    MAP_EACH_TENSOR,
    in_fresh_process,
    peak_rss_mb,
    rss_mb,
)
from benchmarks.timing import interleaved_medians, paired_ratios

SHAPE = dict(hidden_size=2048, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
             intermediate_size=8192, vocab_size=92544)  # fmt: skip
SAMPLES, SUPERVISED = 8, 0.05


@dataclass(frozen=True)
class On:
    """Where the benchmark runs: the device, its training dtype and its packed attention path."""

    device: str = "cpu"

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.device == "cuda" else torch.float32

    @property
    def packed_backend(self) -> str:
        from model.packed_attention import resolve_backend

        return resolve_backend("auto", torch.device(self.device), self.dtype)

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()


def config(layers: int = 1, experts: bool = True):
    from model.configuration import MonoInternVLConfig

    return MonoInternVLConfig(**SHAPE, num_hidden_layers=layers, visual_ffn_experts=experts,
                              image_token_id=3, tile_size=224, vision_hidden_size=64)  # fmt: skip


def pack(tokens: int):
    """Sample ids (8 equal samples) and a visual mask (the middle half of each sample; with
    224-px tiles of 64 tokens, whole tiles from 1,024 tokens up)."""
    per = tokens // SAMPLES
    sample_ids = torch.arange(SAMPLES).repeat_interleave(per)[None]
    offset = torch.arange(tokens) % per
    visual = ((offset >= per // 4) & (offset < per // 4 + per // 2))[None]
    return sample_ids, visual


def _qkv(tokens: int, on: On):
    torch.manual_seed(0)
    h, kv, d = SHAPE["num_attention_heads"], SHAPE["num_key_value_heads"], SHAPE["head_dim"]
    return [torch.randn(1, n, tokens, d, device=on.device, dtype=on.dtype, requires_grad=True)
            for n in (h, kv, kv)]  # fmt: skip


def attention_step(tokens: int, packed: bool, on: On = On()):
    """One attention call (fwd+bwd): packed per-sample spans, or plain causal over the pack."""
    from model.packed_attention import AttentionPlan, PackedSpans

    q, k, v = _qkv(tokens, on)
    spans = PackedSpans(pack(tokens)[0].to(on.device))
    plan = AttentionPlan(spans=spans, backend=on.packed_backend) if packed else AttentionPlan()
    return lambda: plan.attend(q, k, v).sum().backward()


def loss_step(tokens: int, supervised_only: bool, on: On = On()):
    """The loss from the last hidden state, fwd+bwd; LM head frozen (S1.1)."""
    from torch import nn

    from model.supervised_loss import next_token_loss, supervised_loss

    torch.manual_seed(0)
    head = nn.Linear(SHAPE["hidden_size"], SHAPE["vocab_size"], bias=False).requires_grad_(False)
    head = head.to(on.device, on.dtype)
    hidden = torch.randn(1, tokens, SHAPE["hidden_size"], device=on.device, dtype=on.dtype,
                         requires_grad=True)  # fmt: skip
    labels = torch.randint(0, SHAPE["vocab_size"], (1, tokens))
    labels[torch.rand(1, tokens) > SUPERVISED] = -100
    labels = labels.to(on.device)
    if supervised_only:
        return lambda: supervised_loss(hidden, head, labels).backward()
    return lambda: next_token_loss(head(hidden), labels).backward()


def model_step(tokens: int, checkpointing: bool, on: On = On(), layers: int = 4):
    """A training step of a `layers`-layer model: decoder trains, embeddings and head frozen."""
    from model.modeling import MonoInternVLForCausalLM

    torch.manual_seed(0)
    with torch.device("meta"):  # one initialising pass (not nn.Linear's and then the model's)
        model = MonoInternVLForCausalLM(config(layers))
    model = model.to_empty(device=on.device).to(on.dtype).train()  # packed attention: `auto`
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.02)
    model.set_activation_checkpointing("full" if checkpointing else "none")
    for name, param in model.named_parameters():
        param.requires_grad_(".layers." in name)
        if param.requires_grad:  # held before the step, as an optimiser's would be
            param.grad = torch.zeros_like(param)
    sample_ids, visual = pack(tokens)
    ids = torch.randint(10, SHAPE["vocab_size"], (1, tokens))
    ids[visual] = model.config.image_token_id
    tiles = torch.randn(int(visual.sum()) // model.config.tokens_per_tile, 3, 224, 224)
    labels = torch.where(torch.rand(1, tokens) < SUPERVISED, ids, -100)
    ids, labels, sample_ids = (t.to(on.device) for t in (ids, labels, sample_ids))
    tiles = tiles.to(on.device, on.dtype)
    return lambda: model(input_ids=ids, pixel_values=tiles, sample_ids=sample_ids,
                         labels=labels, full_logits=False).loss.backward()  # fmt: skip


def measure_here(builder: str, *args, device: str = "cpu") -> float:
    """Peak memory (MB) the call adds in this process, after a warm-up call at 256 tokens: the
    resident set on the CPU, the caching allocator's peak on CUDA."""
    on = On(device)
    torch.set_num_threads(2)
    # Libraries' one-time set-up, at a tiny size (one layer is enough for the model's step).
    warm = globals()[builder](256, *args[1:], on, **({"layers": 1} if builder == "model_step"
                                                     else {}))  # fmt: skip
    warm()
    del warm
    gc.collect()
    run = globals()[builder](*args, on)
    if on.device == "cuda":
        on.sync()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        run()
        on.sync()
        added = (torch.cuda.max_memory_allocated() - before) / 2**20
        del run
        gc.collect()
        torch.cuda.empty_cache()
        return added
    before = rss_mb()
    run()
    return peak_rss_mb() - before


def added_memory_mb(builder: str, *args, device: str = "cpu") -> float:
    """Peak memory a variant's call adds: on the CPU in a fresh Python process, on CUDA here
    (the allocator's peak statistics see each variant apart)."""
    if device == "cuda":
        return measure_here(builder, *args, device=device)
    return in_fresh_process("benchmarks.real_shape", f"measure_here({builder!r}, *{args!r})",
                            MAP_EACH_TENSOR)


def mmoe_layers(tokens: int, on: On = On()):
    """Dense and MMoE decoder layers (same weights) over a packed half-visual pack, each call a
    training step's fwd+bwd (gradients set to None first, as the optimiser's `zero_grad` does)."""
    from model.attention import RotaryEmbedding
    from model.mmoe import ModalityRoute
    from model.modeling import MonoInternVLDecoderLayer
    from model.packed_attention import AttentionPlan, PackedSpans

    torch.manual_seed(0)
    dense = MonoInternVLDecoderLayer(config(experts=False), 0)
    mmoe = MonoInternVLDecoderLayer(config(experts=True), 0)
    mmoe.load_state_dict(dense.state_dict(), strict=False)
    dense, mmoe = dense.to(on.device, on.dtype), mmoe.to(on.device, on.dtype)
    sample_ids, visual = (t.to(on.device) for t in pack(tokens))
    plan = AttentionPlan(spans=PackedSpans(sample_ids), backend=on.packed_backend)
    x = torch.randn(1, tokens, SHAPE["hidden_size"], device=on.device, dtype=on.dtype,
                    requires_grad=True)  # fmt: skip
    positions = torch.arange(tokens, device=on.device)[None] % (tokens // SAMPLES)
    cos, sin = RotaryEmbedding(SHAPE["head_dim"], 10000.0)(positions, x.dtype)

    def run(layer, route):
        def step():
            layer.zero_grad(set_to_none=True)
            x.grad = None
            layer(x, route, cos, sin, plan).sum().backward()

        return step

    return {"dense": run(dense, ModalityRoute(None)), "mmoe": run(mmoe, ModalityRoute(visual))}


def mmoe_quartiles(rounds: int, device: str = "cpu") -> dict[str, tuple[float, ...]]:
    """Quartiles of MMoE / dense per round, by clock: the synchronised wall clock on a GPU; on the
    CPU also CPU seconds, the headline (this shared machine's wall clock moved the same pair's
    ratio by +-10 % round to round, its CPU seconds by +-4 %)."""
    on = On(device)
    torch.set_num_threads(2)
    pair = mmoe_layers(1024, on)
    clocks = {"wall": time.perf_counter}
    if on.device == "cpu":
        clocks["cpu"] = time.process_time
    return paired_ratios(lambda: (pair["mmoe"](), on.sync()),
                         lambda: (pair["dense"](), on.sync()), rounds=rounds, clocks=clocks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3,
                        help="timed rounds per variant (the MMoE pair: eight times as many)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: cuda where a GPU is visible (bf16, its packed path), else "
                             "cpu (fp32, per_sample)")  # fmt: skip
    args = parser.parse_args()
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    on = On(device)
    torch.set_num_threads(2)
    figures = {}

    # Memory first: fresh processes measured after this one has timed big calls read higher
    # (158 MB became 404 MB for the same packed attention); timings do not depend on the order.
    memory = {n: added_memory_mb("attention_step", n, True, device=device) for n in (4096, 8192)}
    print(f"packed attention adds {memory[4096]:.0f} MB at 4,096, {memory[8192]:.0f} MB at 8,192")
    figures["attention_memory_growth"] = memory[8192] / memory[4096]

    loss = {s: added_memory_mb("loss_step", 4096, s, device=device) for s in (True, False)}
    print(f"loss adds {loss[True]:.0f} MB supervised-only, {loss[False]:.0f} MB full logits")
    figures["loss_memory_vs_full"] = loss[True] / loss[False]

    steps = {c: added_memory_mb("model_step", 2048, c, device=device) for c in (True, False)}
    print(f"4-layer step adds {steps[True]:.0f} MB checkpointed, {steps[False]:.0f} MB not")
    figures["checkpointing_memory"] = steps[True] / steps[False]

    def synced(step):  # a GPU's kernels timed to their end
        return lambda: (step(), on.sync())

    times = interleaved_medians({"packed": synced(attention_step(4096, True, on)),
                                 "causal": synced(attention_step(4096, False, on))},
                                rounds=args.rounds, warmup=1)  # fmt: skip
    print(f"attention 4,096 tokens: packed {times['packed']:.4f} s, causal "
          f"{times['causal']:.4f} s")  # fmt: skip
    figures["attention_packed_vs_causal"] = times["packed"] / times["causal"]

    rounds = 8 * args.rounds
    if device == "cuda":
        quartiles = mmoe_quartiles(rounds, device)
    else:  # a fresh process, its allocator caching (module docstring)
        quartiles = in_fresh_process("benchmarks.real_shape", f"mmoe_quartiles({rounds})",
                                     KEEP_FREED_MEMORY)  # fmt: skip
    for name, (q1, ratio, q3, of_totals) in quartiles.items():
        print(f"decoder layer 1,024 tokens, mmoe / dense per round ({name} seconds): median "
              f"{ratio:.3f}, quartiles {q1:.3f}-{q3:.3f} over {rounds} rounds; of the totals "
              f"{of_totals:.3f}")  # fmt: skip
    figures["mmoe_vs_dense_1p8b"] = quartiles["cpu" if on.device == "cpu" else "wall"][1]

    where = torch.cuda.get_device_name() if on.device == "cuda" else \
        f"{torch.get_num_threads()} threads"  # fmt: skip
    print(f"device: {device} ({where}, {on.dtype}, packed attention {on.packed_backend})")
    for name, value in figures.items():
        print(f"{name}: {value:.3f}")


if __name__ == "__main__":
    main()
