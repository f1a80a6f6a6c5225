"""`evip plan`: the paper's setting priced, checked by hand arithmetic."""

from __future__ import annotations

import pytest

from flows.cli import main
from pipelines.train.cost import INTERNLM2_1_8B, CostOptions, active_parameters, paper_costs

# InternLM2-1.8B: hidden 2048, 24 layers, FFN 8192, 16 query / 8 key-value heads of 128, vocab
# 92,544. Per layer: attention wqkv 2048 x (2048 + 2 x 1024) + wo 2048 x 2048 = 12,582,912;
# an FFN (text or visual expert) 3 x 2048 x 8192 = 50,331,648; two RMSNorms 2 x 2048.
LAYER = 12_582_912 + 50_331_648 + 2 * 2048
TEXT = 24 * LAYER + 2048 + 92_544 * 2048  # + final norm + lm_head (the lookup costs nothing)
# A visual token: same layer sizes (its FFN is the visual expert), no lm_head, plus the patch
# embedding at vision width 2048 (= the LLM's, the default): conv 3 x 14 x 14 x 2048 + bias,
# a class embedding, 1 + 32 x 32 position embeddings, the pixel-shuffled LayerNorm 2 x 8192,
# MLP 8192 x 2048 + 2048 and 2048 x 2048 + 2048.
PATCH_EMBED = (588 * 2048 + 2048) + 2048 + (1 + 1024) * 2048 + 2 * 8192 + (
    8192 * 2048 + 2048) + (2048 * 2048 + 2048)
VISUAL = 24 * LAYER + 2048 + PATCH_EMBED


def test_active_parameters_of_mono_internvl_2b_by_hand():
    active = active_parameters(INTERNLM2_1_8B)
    assert (active.visual, active.text) == (VISUAL, TEXT)


def test_the_papers_campaign_priced_by_hand():
    options = CostOptions(gpu_peak_tflops=989, mfu=0.4)
    costs, _ = paper_costs(options)
    s11 = costs[0]
    # S1.1: 922M samples x (1,280 visual tokens, 40 text tokens).
    flops = 6 * 922e6 * (VISUAL * 1280 + TEXT * 40)
    assert s11.samples == 922_000_000 and s11.visual_tokens == 922e6 * 1280
    assert s11.flops == pytest.approx(flops, rel=1e-12)
    assert s11.gpu_hours == pytest.approx(flops / (989e12 * 0.4) / 3600, rel=1e-12)
    assert [c.samples for c in costs] == [922_000_000, 258_000_000, 143_000_000]
    assert costs[1].visual_tokens == 258e6 * 1792 and costs[2].visual_tokens == 143e6 * 3328


def test_plan_prints_the_run_and_the_paper(capsys):
    assert main(["plan", "--config", "configs/demo.yaml", "--paper", "--mfu", "0.5",
                 "stages.stages.0.samples=1000"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "| S1.1 | 1.00k | 1.28M | 40.00k |" in out  # the run's S1.1, priced from its config
    assert "not priced yet" in out and "S1.2" in out
    assert "| S1.1 | 922.00M |" in out and "MFU 0.5" in out
    assert main(["plan", "--mfu", "1.5"]) == 2
    assert "mfu" in capsys.readouterr().err
