"""The recaption job's stages as plain callables over batches (no Ray in here).

read_shard (`reading.py`: shard -> its kept samples) -> Preprocess (decode + InternVL tiling +
tokens, CPU) -> Caption (the teacher, batched; cleaning) -> CaptionWriter (`writer.py`). A bad
image or a failing generation drops that one sample with a reason; the rest of its batch goes on.
"""

from __future__ import annotations

import numpy as np

from pipelines.model_folders import local_model_folder
from recaption.cleaning import clean_caption
from recaption.options import CleaningOptions, TeacherOptions
from recaption.prompts import prompt_for
from recaption.teacher import PreparedSample, TeacherInputs, build_teacher, decode_image


class Preprocess:
    """CPU stage: image bytes -> prompt tokens + tiles; an unreadable image gets `bad_image`.

    For the vLLM backend, which tiles by itself, it only checks the image and writes the prompt
    text; the bytes travel on.
    """

    def __init__(self, teacher_path: str, options: TeacherOptions, backend: str = "transformers"):
        self.inputs = TeacherInputs(str(local_model_folder(teacher_path)), options, backend)
        self.options, self.backend = options, backend

    def __call__(self, batch: dict) -> dict:
        ids, pixels, errors, prompts, texts = [], [], [], [], []
        for data, sample_id in zip(batch["jpg"], batch["sample_id"]):
            prompt = prompt_for(sample_id, self.options.prompts)
            texts.append(self.inputs.prompt_text(prompt))
            try:
                image = decode_image(bytes(data))
                if self.backend == "vllm":
                    prepared = PreparedSample(
                        np.zeros(0, np.int64), np.zeros((0, 3, 1, 1), np.float16)
                    )
                else:
                    prepared = self.inputs.prepare(image, prompt)
                ids.append(prepared.input_ids)
                pixels.append(prepared.pixel_values)
                errors.append("")
            except Exception as error:  # any undecodable or unprocessable image
                ids.append(np.zeros(0, np.int64))
                pixels.append(np.zeros((0, 3, 1, 1), np.float16))
                errors.append(f"bad_image: {type(error).__name__}: {error}"[:300])
            prompts.append(prompt)
        out = {k: batch[k] for k in ("shard", "key", "sample_id", "alt_text")}
        out.update(input_ids=ids, pixel_values=pixels, error=errors, prompt=prompts,
                   prompt_text=texts)  # fmt: skip
        if self.backend == "vllm":
            out["jpg"] = batch["jpg"]
        return out


class Caption:
    """GPU (or CPU) stage: the teacher on a batch; one failing sample never drops the batch."""

    def __init__(self, teacher_path: str, options: TeacherOptions, cleaning: CleaningOptions,
                 torch_threads: int | None = None, backend: str = "transformers"):  # fmt: skip
        if torch_threads is not None:
            import torch

            torch.set_num_threads(torch_threads)
        self.teacher = build_teacher(str(local_model_folder(teacher_path)), options, backend)
        self.cleaning, self.backend = cleaning, backend

    def _generate_batch(self, batch: dict, rows: list[int]) -> list[str]:
        if self.backend == "vllm":
            images = [decode_image(bytes(batch["jpg"][i])) for i in rows]
            return self.teacher.generate_from_images(
                images, [batch["prompt_text"][i] for i in rows]
            )
        samples = [PreparedSample(np.asarray(batch["input_ids"][i]),
                                  np.asarray(batch["pixel_values"][i])) for i in rows]  # fmt: skip
        return self.teacher.generate(samples)

    def _generate(self, batch: dict, rows: list[int]) -> list[str | Exception]:
        try:
            return list(self._generate_batch(batch, rows))
        except Exception as error:
            if len(rows) == 1:
                return [error]
        results: list[str | Exception] = []
        for row in rows:  # isolate the sample that breaks generation
            try:
                results.append(self._generate_batch(batch, [row])[0])
            except Exception as error:
                results.append(error)
        return results

    def __call__(self, batch: dict) -> dict:
        n = len(batch["key"])
        raw: list[str | None] = [None] * n
        reasons: list[str | None] = [None] * n
        good = [i for i in range(n) if not batch["error"][i]]
        for i in range(n):
            if batch["error"][i]:
                reasons[i] = "bad_image"
        outputs = self._generate(batch, good) if good else []
        for i, output in zip(good, outputs):
            if isinstance(output, Exception):
                reasons[i] = "generation_error"
            else:
                raw[i] = output
        cleaned = [clean_caption(text, self.cleaning) if text is not None else (None, None)
                   for text in raw]  # fmt: skip
        teacher_captions = [c for c, _ in cleaned]
        reasons = [r or c_reason for r, (_, c_reason) in zip(reasons, cleaned)]
        fallback = [c is None for c in teacher_captions]
        captions = [c if c is not None else str(alt)
                    for c, alt in zip(teacher_captions, batch["alt_text"])]  # fmt: skip
        return {"shard": batch["shard"], "key": batch["key"], "sample_id": batch["sample_id"],
                "caption": captions, "teacher_caption": teacher_captions, "raw_caption": raw,
                "fallback": fallback, "reason": reasons, "prompt": batch["prompt"]}  # fmt: skip
