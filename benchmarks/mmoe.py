"""MMoE decoder layer (gather -> expert -> scatter) vs the same layer with one dense FFN.

One layer at a realistic shape (hidden 512, FFN 2048, 1,024 tokens, half of them visual),
forward + backward, timed side by side. Also times the official release's blend-both layer
(both FFNs on every token, then masked) for reference. Last line: `mmoe_vs_dense: <ratio>`.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.timing import interleaved_medians
from model.configuration import MonoInternVLConfig
from model.mmoe import ModalityRoute
from model.modeling import MonoInternVLDecoderLayer
from model.packed_attention import AttentionPlan


class BlendBothRoute(ModalityRoute):
    """The official implementation's routing: every expert on every token, then select."""

    def __init__(self, visual_mask_BS):
        super().__init__(visual_mask_BS)
        self.mask_BS1 = visual_mask_BS[..., None]

    def apply(self, x_BSD, text_fn, visual_fn):
        if visual_fn is None:
            return text_fn(x_BSD)
        return torch.where(self.mask_BS1, visual_fn(x_BSD), text_fn(x_BSD))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--ffn", type=int, default=2048)
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--visual-share", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()

    torch.manual_seed(0)
    shape = dict(hidden_size=args.hidden, intermediate_size=args.ffn, num_hidden_layers=1,
                 num_attention_heads=8, num_key_value_heads=8, vocab_size=64)  # fmt: skip
    dense = MonoInternVLDecoderLayer(MonoInternVLConfig(**shape, visual_ffn_experts=False), 0)
    mmoe = MonoInternVLDecoderLayer(MonoInternVLConfig(**shape, visual_ffn_experts=True), 0)
    mmoe.load_state_dict(dense.state_dict(), strict=False)

    # One image block in the middle of the sequence, as in a captioning sample.
    n_visual = int(args.tokens * args.visual_share)
    start = (args.tokens - n_visual) // 2
    mask = torch.zeros(1, args.tokens, dtype=torch.bool)
    mask[:, start : start + n_visual] = True
    x = torch.randn(1, args.tokens, args.hidden, requires_grad=True)
    positions = torch.arange(args.tokens)[None]
    head_dim = args.hidden // 8
    from model.attention import RotaryEmbedding

    cos, sin = RotaryEmbedding(head_dim, 10000.0)(positions, x.dtype)
    routes = {"dense": ModalityRoute(None), "mmoe": ModalityRoute(mask),
              "blend_both": BlendBothRoute(mask)}  # fmt: skip
    layers = {"dense": dense, "mmoe": mmoe, "blend_both": mmoe}

    def step(name):
        def run():
            layers[name](x, routes[name], cos, sin, AttentionPlan()).sum().backward()

        return run

    times = interleaved_medians({name: step(name) for name in routes}, rounds=args.rounds)
    print(f"threads: {torch.get_num_threads()}, tokens: {args.tokens}, visual: {n_visual}")
    for name, seconds in times.items():
        print(f"{name:>10}: {seconds * 1e3:7.2f} ms / forward+backward")
    print(f"blend_both_vs_dense: {times['blend_both'] / times['dense']:.3f}")
    print(f"mmoe_vs_dense: {times['mmoe'] / times['dense']:.3f}")


if __name__ == "__main__":
    main()
