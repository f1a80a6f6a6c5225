"""A synthetic image web: drawn scenes with ground truth, served on 127.0.0.1, as source parquet."""
