"""lmms-eval on evip checkpoints: `lmms-eval --model evip` on the shipped probe tasks, offline,
scoring exactly as evip's own probe loop; bad task names and checkpoints refused up front."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from model.build import build_model
from model.options import ModelOptions, TinyLLMOptions, VisionOptions
from model.tiny import save_tiny_llm
from pipelines.evaluate.evaluate import (
    EvalOptions,
    evaluate_weights,
    grounded,
    grounding_prompt,
    truth_of,
)
from pipelines.evaluate.job import evaluate_checkpoints
from pipelines.evaluate.probe_task import write_probe_task
from pipelines.evaluate.scoring import accuracy, score_caption
from pipelines.loader.encode import encode_conversation
from pipelines.model_folders import model_folder
from pipelines.stages.spec import CONCEPT_PROMPT
from pipelines.synthetic.probe import write_probe

IMAGES = 6
OPTIONS = EvalOptions(images=IMAGES, texts=2, max_new_tokens=24, batch_size=4, cpus=0.5)


def _overfit(model, tokenizer, processor, rows, steps: int) -> None:
    """A few hundred plain-torch steps on the probe's own captions and boxes, so that answers
    name shapes and colours (an untrained model's score of 0 would make any comparison moot).

    At lr 3e-3 it scores the same on 1 and 2 threads (caption 0.63, grounding 1.0); at 1e-2 it
    hung on rounding: 0.19 on 1 thread, 0.11 on 2, on one machine."""
    from pipelines.stages.render import box_1000

    talks = []
    for row in rows:
        image = Image.open(io.BytesIO(row["image"])).convert("RGB")
        features = processor(images=[image], return_tensors="pt", max_visual_tokens=1280)
        tokens = [int(features["num_patches"][0]) * processor.tokens_per_tile]
        truth = truth_of(row)
        box = box_1000(truth["objects"][0]["box"], row["width"], row["height"])
        for prompt, answer in ((CONCEPT_PROMPT, truth["description"]),
                               (grounding_prompt(truth), f"[[{', '.join(map(str, box))}]]")):
            ids, labels = encode_conversation(tokenizer, [
                {"from": "human", "value": f"<image>\n{prompt}"}, {"from": "gpt", "value": answer}],
                tokens)  # fmt: skip
            talks.append((torch.tensor([ids]), torch.tensor(labels[1:]), features["pixel_values"]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        ids, target, pixels = talks[step % len(talks)]
        logits = model(input_ids=ids, pixel_values=pixels).logits[0, :-1]
        F.cross_entropy(logits, target, ignore_index=-100).backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(checkpoint folder, probe folder): a tiny model overfit on the probe, recorded complete."""
    root = tmp_path_factory.mktemp("harness")
    probe = write_probe(str(root / "probe"), seed=0, images=IMAGES, texts=2)
    options = ModelOptions(tiny_llm=TinyLLMOptions(hidden_size=64, intermediate_size=128),
                           vision=VisionOptions(tile_size=56, vision_hidden_size=32, max_tiles=2))
    torch.manual_seed(0)
    model, tokenizer, processor = build_model(options, save_tiny_llm(root / "llm",
                                                                     options.tiny_llm))
    _overfit(model, tokenizer, processor, pq.read_table(root / "probe" / "images.parquet")
             .to_pylist(), steps=600)  # fmt: skip

    def save(local):
        model.save_pretrained(local)
        tokenizer.save_pretrained(local)
        processor.save_pretrained(local)

    model_folder(str(root / "checkpoints"), "trained", {"steps": 600}, save, root / "cache")
    return str(root / "checkpoints" / "trained"), probe, root


def _offline_env(root) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "HF_HOME": str(root / "hf"), "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip


@pytest.mark.slow
def test_lmms_eval_cli_runs_the_evip_model_and_scores_as_evip_does(trained, tmp_path):
    weights, probe, root = trained
    tasks = write_probe_task(probe, tmp_path / "tasks", OPTIONS.max_new_tokens)  # what evip asks
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "lmms_eval", "--model", "evip", "--model_args",
         f"pretrained={weights}", "--tasks", "evip_probe", "--include_path", str(tasks),
         "--batch_size", str(OPTIONS.batch_size), "--output_path", str(out), "--log_samples"],
        cwd=tmp_path, env=_offline_env(root), capture_output=True, text=True,
        timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [results] = out.rglob("*_results.json")
    scores = json.loads(results.read_text())["results"]
    rows = pq.read_table(tasks / "images.parquet").to_pylist()
    answers = {}
    for name in ("evip_probe_caption", "evip_probe_grounding"):
        [samples] = out.rglob(f"*_samples_{name}.jsonl")
        lines = [json.loads(line) for line in samples.read_text().splitlines()]
        answers[name] = [line["filtered_resps"] for line in sorted(lines,
                                                                   key=lambda x: x["doc_id"])]
    # The harness's numbers are evip's scoring of the harness's answers...
    caption = accuracy([score_caption(a, truth_of(r))
                        for a, r in zip(answers["evip_probe_caption"], rows)])  # fmt: skip
    hits = [grounded(a, r) for a, r in zip(answers["evip_probe_grounding"], rows)]
    for metric in ("caption_accuracy", "shape_accuracy", "colour_accuracy", "text_accuracy"):
        assert scores["evip_probe_caption"][f"{metric},none"] == pytest.approx(caption[metric])
    assert scores["evip_probe_grounding"]["grounding_accuracy,none"] == pytest.approx(
        sum(hits) / len(hits))
    # ... and the answers are evip's own probe loop's, so the figures match it too.
    own = evaluate_weights(weights, probe, OPTIONS)
    assert own["caption_accuracy"] == pytest.approx(caption["caption_accuracy"])
    assert own["grounding_accuracy"] == pytest.approx(sum(hits) / len(hits))
    assert caption["caption_accuracy"] > 0.2  # the comparison is not between two zeros


@pytest.mark.slow
def test_the_evaluate_step_runs_harness_tasks_in_its_ray_task(trained, tmp_path, ray_local):
    """Each task is recorded alone: a benchmark added to a checkpoint already evaluated is the
    only thing evaluated."""
    weights, probe, _ = trained
    folder = tmp_path / "eval"
    alone = evaluate_checkpoints(str(folder), {"S1.1": weights}, probe, OPTIONS)["S1.1"]
    assert "harness" not in alone
    probed = (folder / "S1.1@probe.json").stat().st_mtime_ns
    options = OPTIONS.model_copy(update={"harness_tasks": ("evip_probe",)})
    figures = evaluate_checkpoints(str(folder), {"S1.1": weights}, probe, options)["S1.1"]
    assert (folder / "S1.1@probe.json").stat().st_mtime_ns == probed  # read back, not redone
    assert figures == alone | {"harness": figures["harness"]}
    record = json.loads((folder / "_done" / "S1.1@evip_probe.json").read_text())
    assert record["settings"]["part"] == "evip_probe"
    harness = figures["harness"]
    assert set(harness) >= {"evip_probe_caption", "evip_probe_grounding"}
    assert harness["evip_probe_caption"]["caption_accuracy"] == pytest.approx(
        figures["caption_accuracy"])
    assert harness["evip_probe_grounding"]["grounding_accuracy"] == pytest.approx(
        figures["grounding_accuracy"])


def test_a_bad_task_name_or_checkpoint_fails_before_any_ray_task(trained, tmp_path):
    weights, probe, root = trained
    folder = tmp_path / "eval"
    typo = OPTIONS.model_copy(update={"harness_tasks": ("evip_probe_captoin",)})
    with pytest.raises(ValueError, match="unknown lmms-eval tasks: evip_probe_captoin "
                                         r"\(did you mean evip_probe_caption"):  # fmt: skip
        evaluate_checkpoints(str(folder), {"S1.1": weights}, probe, typo)
    with pytest.raises(ValueError, match="ask the probe: set evaluate.probe"):
        evaluate_checkpoints(str(folder), {"S1.1": weights}, None,
                             OPTIONS.model_copy(update={"harness_tasks": ("evip_probe",)}))
    # A complete folder that is not an evip checkpoint (the base LLM, say).
    llm = model_folder(str(tmp_path / "checkpoints"), "llm", {"base": 1},
                       lambda local: shutil.copytree(root / "llm", local, dirs_exist_ok=True),
                       tmp_path / "cache")  # fmt: skip
    with pytest.raises(ValueError, match="does not load|not evip's"):
        evaluate_checkpoints(str(folder), {"llm": str(llm)}, probe, OPTIONS)
    assert not folder.exists() or not any(folder.iterdir())  # nothing was evaluated


def test_loglikelihood_scores_the_answer_as_the_assistants_turn(trained):
    """lmms-eval's loglikelihood requests (context, continuation or doc_to_target): the summed
    log-probability of the continuation as evip's assistant turn, image included."""
    from lmms_eval.api.instance import Instance

    from pipelines.evaluate.asker import Asker
    from pipelines.evaluate.harness_model import EvipLMM
    from pipelines.evaluate.probe_task import doc_to_visual

    weights, probe, _ = trained
    asker = Asker.from_folder(weights, max_patches=1280, batch_size=4)
    model = EvipLMM.from_asker(asker)
    rows = pq.read_table(f"{probe}/images.parquet").to_pylist()
    model.task_dict = {"probe": {"test": rows}}
    truth = truth_of(rows[0])["description"]

    def ask(continuation, doc_id=0):
        return Instance("loglikelihood", (CONCEPT_PROMPT, continuation, doc_to_visual, doc_id,
                                          "probe", "test"), 0,
                        {"task": "probe", "doc_id": doc_id, "repeats": 1})  # fmt: skip

    (right, greedy), (wrong, _), (by_target, _) = model.loglikelihood(
        [ask(truth), ask(truth, doc_id=1), ask(lambda doc: truth_of(doc)["description"])])
    assert right > wrong  # the description is likelier beside its own image than another's
    assert by_target == right and isinstance(greedy, bool)
    image = doc_to_visual(rows[0])[0]
    _, tokens, _ = asker.answer_logprobs(image, CONCEPT_PROMPT, truth)
    assert -right / tokens == pytest.approx(asker.loss([image], CONCEPT_PROMPT, [truth]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_harness_on_cuda_scores_as_on_cpu(trained):
    weights, probe, _ = trained
    cpu = evaluate_weights(weights, probe, OPTIONS.model_copy(
        update={"harness_tasks": ("evip_probe",)}))  # fmt: skip
    cuda = evaluate_weights(weights, probe, OPTIONS.model_copy(
        update={"harness_tasks": ("evip_probe",), "gpus": 1.0}))  # fmt: skip
    assert cuda["harness"]["evip_probe_caption"]["caption_accuracy"] == pytest.approx(
        cpu["harness"]["evip_probe_caption"]["caption_accuracy"], abs=0.1)
