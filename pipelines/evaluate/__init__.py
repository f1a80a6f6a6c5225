"""Held-out evaluation of a checkpoint: next-token loss, caption and grounding accuracy, text
perplexity (see `evaluate.py`)."""
