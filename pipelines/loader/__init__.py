"""The training loader: stage shards -> tokenized, masked, packed batches with a resumable state."""
