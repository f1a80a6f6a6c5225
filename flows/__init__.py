"""Prefect flows, the run config and the `evip` CLI."""
