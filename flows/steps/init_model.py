"""The model command's step: build Mono-InternVL from the start LLM (the `init` checkpoint)."""

from __future__ import annotations

from flows.steps.base import Step


class Model(Step):
    name, command = "model", "model"
    doc = "build Mono-InternVL, caption, save and reload its checkpoints"

    def folder(self, config, layout, source):
        return layout.checkpoints()

    def units(self, config, layout, source):
        return ["init"] + ([] if config.model.experts.visual_attention_experts
                           else ["init-official"])  # fmt: skip

    def settings(self, config, layout, source, unit):
        return {"model": config.model.model_dump(mode="json"), "stage": "init"}

    def run(self, config, source, upstream):
        from flows.model_demo import run_model_demo

        return run_model_demo(config)
