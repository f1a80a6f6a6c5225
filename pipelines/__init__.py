"""Ray jobs: download, filter, stage shards, training loader, Ray Train + DeepSpeed."""
