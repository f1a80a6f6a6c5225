"""The lmms-eval path vs evip's own probe loop: the same checkpoint, the same questions.

The demo's evaluation (96 images, 40 new tokens, batches of 16) on a checkpoint of its student's
shape (random weights: every answer runs to the token limit, so both paths do the same work):
the probe's caption and grounding questions answered twice per round, timed side by side,
through `lmms_eval.evaluator.simple_evaluate` with evip's model (`--model evip`: task loading,
dataset building, request objects, post-processing and scoring included) and through evip's own
loop (`Asker.answers` + scoring). Last line: `harness_vs_probe: <samples/s of the harness /
samples/s of the probe loop>` (goal >= 0.8).
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

import torch
from PIL import Image

from benchmarks.timing import interleaved_medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96, help="probe images (x2 questions)")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    from flows.config import load_run_config
    from model.build import build_model
    from model.tiny import save_tiny_llm
    from pipelines.evaluate.asker import Asker
    from pipelines.evaluate.evaluate import grounded, grounding_prompt, truth_of
    from pipelines.evaluate.harness import metrics_of
    from pipelines.evaluate.harness_model import EvipLMM
    from pipelines.evaluate.probe_task import write_probe_task
    from pipelines.evaluate.scoring import accuracy, score_caption
    from pipelines.stages.spec import CONCEPT_PROMPT
    from pipelines.storage import read_parquet
    from pipelines.synthetic.probe import write_probe

    scratch = Path(tempfile.mkdtemp(prefix="evip-bench-eval-"))
    config = load_run_config("configs/demo.yaml")
    torch.manual_seed(0)
    model, tokenizer, processor = build_model(config.model, save_tiny_llm(
        scratch / "llm", config.model.tiny_llm))  # fmt: skip
    asker = Asker(model.eval(), tokenizer, processor, 1280, args.batch_size)
    probe = write_probe(str(scratch / "probe"), seed=0, images=args.images, texts=1)
    tasks = write_probe_task(probe, scratch / "tasks")
    rows = read_parquet(f"{probe}/images.parquet").to_pylist()
    manager = TaskManager(verbosity="ERROR", include_path=[str(tasks)], include_defaults=False)
    harness_model = EvipLMM.from_asker(asker)
    figures = {}

    def harness():
        results = simple_evaluate(model=harness_model, tasks=["evip_probe"],
                                  batch_size=args.batch_size, task_manager=manager,
                                  gen_kwargs=f"max_new_tokens={args.max_new_tokens}",
                                  verbosity="ERROR")  # fmt: skip
        figures["harness"] = metrics_of(results)

    def probe_loop():
        images = [Image.open(io.BytesIO(r["image"])).convert("RGB") for r in rows]
        truths = [truth_of(r) for r in rows]
        captions = asker.answers(images, [CONCEPT_PROMPT] * len(images), args.max_new_tokens)
        boxes = asker.answers(images, [grounding_prompt(t) for t in truths], args.max_new_tokens)
        figures["probe"] = (accuracy([score_caption(c, t) for c, t in zip(captions, truths)]),
                            [grounded(b, r) for b, r in zip(boxes, rows)])  # fmt: skip

    seconds = interleaved_medians({"harness": harness, "probe": probe_loop}, args.rounds,
                                  warmup=1)  # fmt: skip
    questions = 2 * len(rows)
    caption = figures["harness"]["evip_probe_caption"]["caption_accuracy"]
    print(f"questions per round: {questions} ({len(rows)} images x caption + grounding), "
          f"{args.max_new_tokens} new tokens each, batch {args.batch_size}")
    for name in ("probe", "harness"):
        print(f"{name}: {seconds[name]:.2f} s ({questions / seconds[name]:.1f} samples/s)")
    print(f"same caption accuracy: {caption == figures['probe'][0]['caption_accuracy']}")
    print(f"harness_vs_probe: {seconds['probe'] / seconds['harness']:.3f}")


if __name__ == "__main__":
    main()
