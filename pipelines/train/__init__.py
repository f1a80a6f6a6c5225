"""Training through the curriculum: the schedule, DeepSpeed configs, Ray Train workers."""
