"""The campaign as a Prefect flow: one task per arrow of DESIGN.md, reports as artifacts.

Trigger it from the Prefect UI (`evip serve` registers a deployment whose parameter form is the
run config) or run it once (`evip run`, on Prefect's local server). The tasks call the same
functions as the CLI; the Ray jobs inside them resume where a killed run stopped.
"""

# No `from __future__ import annotations` here: Prefect builds the parameter schema (the UI form)
# from the flow's annotations at runtime, so they must be real classes, not strings.
import re

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.config import RunConfig
from flows.ingest import ingest_markdown, ingest_one, served_synthetic_web
from flows.model_demo import run_model_demo
from flows.recaption import recaption_markdown, recaption_one, recaption_sources
from pipelines.ingest import validate_sources


def _source(config: RunConfig, name: str):
    return next(s for s in config.sources if s.name == name)


def _publish(markdown: str, step: str, source_name: str) -> None:
    """Logs a step's report and keeps it as a Prefect artifact (`<step>-<source>`)."""
    print(markdown)
    key = re.sub(r"[^a-z0-9-]+", "-", f"{step}-{source_name}".lower()).strip("-")
    create_markdown_artifact(markdown, key=key, description=f"{step} report of {source_name}")


@task(name="ingest-source", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def ingest_task(config: RunConfig, source_name: str) -> dict:
    """Download (img2dataset on Ray), repair and filter one source."""
    report = ingest_one(config, _source(config, source_name))
    _publish(ingest_markdown(report), "ingest", source_name)
    return report


@task(name="recaption-source", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def recaption_task(config: RunConfig, source_name: str) -> dict:
    """Caption one source's kept images with the teacher (Ray Data)."""
    report = recaption_one(config, _source(config, source_name))
    _publish(recaption_markdown(report, config.teacher.name), "recaption", source_name)
    return report


@task(name="model", cache_policy=NO_CACHE)
def model_task(config: RunConfig) -> dict:
    """Build Mono-InternVL from the configured LLM, caption, save and reload checkpoints."""
    return run_model_demo(config)


@flow(name="evip-campaign", log_prints=True)
def campaign(config: RunConfig = RunConfig()) -> dict:
    """One EViP campaign run: ingest every source, recaption, then the model."""
    with served_synthetic_web(config):
        validate_sources(config.sources)
        ingested = [ingest_task(config, s.name) for s in config.sources]
    recaptioned = [recaption_task(config, s.name) for s in recaption_sources(config)]
    model = model_task(config)
    return {"ingest": ingested, "recaption": recaptioned, "model": model}
