"""The step commands, said once: what each does, in campaign order. The CLI's help and the Prefect
flows' descriptions read it; the step table (`flows/steps/`) names each step's command (a test
holds the two in step). Kept free of imports so `evip --help` stays fast."""

COMMANDS = {
    "ingest": "download (img2dataset on Ray), repair and filter every source",
    "recaption": "caption every kept image with the teacher (Ray Data actors)",
    "stages": "build the curriculum's stage shards (S1.1-S2) from keep-lists + captions",
    "model": "build Mono-InternVL from the start LLM (the init checkpoint)",
    "train": "train every curriculum stage from the last one's final weights (Ray Train + "
             "DeepSpeed); a killed stage resumes from its last checkpoint",
    "evaluate": "held-out evaluation of every checkpoint: caption/grounding accuracy, loss, "
                "text perplexity, the quality-against-data figure",
}  # fmt: skip


class NotReadyError(ValueError):
    """A step's inputs are not made yet; the message names the command that makes them."""
