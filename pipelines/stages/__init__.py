"""Curriculum stage shards: what each EViP stage trains on, from keep-lists and captions."""
