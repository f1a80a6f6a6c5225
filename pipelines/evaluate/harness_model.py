"""evip checkpoints as an lmms-eval model: `lmms-eval --model evip --model_args pretrained=DIR`.

Registered through lmms-eval's entry-point group `lmms_eval.models` (pyproject.toml), so
installing evip is enough. Asks through `Asker`, exactly as `evip evaluate` asks: evip's chat
format tokenized as training tokenizes it, the checkpoint's own image processor, greedy decoding
in left-padded batches, requests kept in document order (batches match evip's own probe loop).

model_args: `pretrained` (checkpoint folder, local or object store), `max_patches` (visual tokens
per image, 1280), `device` (`cpu`, `cuda`, ...; default cuda when available), `dtype` (e.g.
`bfloat16`; default the checkpoint's). Questions per batch: lmms-eval's `--batch_size`. One
process: it does not split requests by rank (launch lmms-eval without `accelerate launch`).
"""

from __future__ import annotations

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from tqdm import tqdm

DEFAULT_MAX_NEW_TOKENS = 40


def manifest():
    """The entry point lmms-eval loads: model id `evip` -> `EvipLMM`."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="evip",
                         simple_class_path="pipelines.evaluate.harness_model.EvipLMM")  # fmt: skip


def cut_at_stops(text: str, until) -> str:
    """The answer up to the first of the task's stop strings."""
    for stop in [until] if isinstance(until, str) else list(until or []):
        if stop:
            text = text.split(stop, 1)[0]
    return text


class EvipLMM(lmms):
    """A loaded evip checkpoint answering lmms-eval's generation and log-likelihood requests."""

    is_simple = True

    def __init__(self, pretrained: str, batch_size: int | str = 16, max_patches: int | str = 1280,
                 device: str | None = None, dtype: str | None = None,
                 max_batch_size: int | None = None, **unknown) -> None:  # fmt: skip
        super().__init__()
        if unknown:
            raise ValueError(f"evip model: unknown model_args {sorted(unknown)} (known: "
                             "pretrained, max_patches, device, dtype; the batch is "
                             "--batch_size)")  # fmt: skip
        import torch

        from pipelines.evaluate.asker import Asker
        from pipelines.model_folders import local_model_folder

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.asker = Asker.from_folder(local_model_folder(str(pretrained)), int(max_patches),
                                       int(batch_size), device, dtype)  # fmt: skip
        self.lent = False

    @classmethod
    def from_asker(cls, asker) -> EvipLMM:
        """The model around a checkpoint already loaded (the evaluate step's, loaded once)."""
        model = cls.__new__(cls)
        lmms.__init__(model)
        model.asker, model.lent = asker, True
        return model

    def clean(self) -> None:
        """Frees the model when lmms-eval is done with it, unless it was lent (`from_asker`):
        its owner goes on using it, and lmms-eval's own clean-up (two full garbage collections
        and the accelerator's cache) cost more than the questions of a small task."""
        if not self.lent:
            self.asker = None
            super().clean()

    @property
    def device(self):
        return self.asker.device

    @property
    def batch_size(self) -> int:
        return self.asker.batch_size

    def _doc(self, request: Instance) -> dict:
        *_, doc_id, task, split = request.args
        return self.task_dict[task][split][doc_id]

    def _image(self, request: Instance):
        """The request's one image (None for text-only); more than one is refused."""
        doc_to_visual = request.args[2]
        visuals = [] if doc_to_visual is None else doc_to_visual(self._doc(request))
        visuals = [v for v in (visuals or []) if v is not None]
        if len(visuals) > 1:
            raise ValueError(f"evip model: {len(visuals)} images in one request of task "
                             f"{request.args[-2]}; evip asks one image per question")  # fmt: skip
        return visuals[0].convert("RGB") if visuals else None

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Greedy answers in document order, batched per task and generation settings (so a
        task's batches are the ones evip's own probe loop asks)."""
        answers: list[str | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for index, request in enumerate(requests):
            kwargs = dict(request.args[1] or {})
            key = (request.args[-2], int(kwargs.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)),
                   repr(kwargs.get("until")))  # fmt: skip
            groups.setdefault(key, []).append(index)
        bar = tqdm(total=len(requests), desc="evip answering", disable=self.rank != 0)
        for (_, max_new_tokens, _), indices in groups.items():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                images = [self._image(requests[i]) for i in chunk]
                prompts = [requests[i].args[0] for i in chunk]
                for i, text in zip(chunk, self.asker.answers(images, prompts, max_new_tokens)):
                    answers[i] = cut_at_stops(text, (requests[i].args[1] or {}).get("until"))
                bar.update(len(chunk))
        bar.close()
        return answers

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        """(log-probability of the continuation as the assistant's answer, greedy or not)."""
        out = []
        for request in tqdm(requests, desc="evip scoring", disable=self.rank != 0):
            context, continuation = request.args[0], request.args[1]
            if not isinstance(continuation, str):
                continuation = continuation(self._doc(request))
            logprob, _, greedy = self.asker.answer_logprobs(self._image(request), context,
                                                            continuation.strip())  # fmt: skip
            out.append((logprob, greedy))
        return out

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError("evip model: multi-round generation is not supported")
