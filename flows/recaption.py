"""The recaption part of a run: every ingested source through the teacher, shard by shard."""

from __future__ import annotations

from flows.config import RunConfig
from pipelines import storage
from pipelines.layout import RunLayout
from pipelines.model_folders import model_folder
from pipelines.ray_runtime import ensure_ray
from recaption.job import RecaptionJob, report_table
from recaption.tiny_teacher import save_tiny_teacher


def teacher_path(config: RunConfig) -> str:
    """The configured checkpoint, or a tiny InternVL written once under the run root (random, or
    trained on the synthetic web when `teacher.tiny.train_steps` > 0).

    A local path or a URL: the Ray actors that load it copy a remote folder to their own node.
    """
    if config.teacher.path is not None:
        if not storage.exists(storage.join(config.teacher.path, "config.json")):
            raise FileNotFoundError(f"teacher.path: no checkpoint at {config.teacher.path}")
        return config.teacher.path
    layout, teacher = RunLayout(config.run_root), config.teacher
    settings = {"tiny_internvl": {"max_tiles": teacher.max_tiles, "seed": 0,
                                  **teacher.tiny.model_dump()}}  # fmt: skip
    web = config.synthetic_web
    if teacher.tiny.train_steps and web is not None:
        from pipelines.synthetic.pretrained import shipped_or
        from pipelines.synthetic.student import demo_tokenizer
        from recaption.demo_teacher import train_demo_teacher

        settings["trained_on"] = {"web_seed": web.seed, "images": web.num_images}

        def train(local):
            train_demo_teacher(local, teacher, web.seed, web.num_images,
                               tokenizer=demo_tokenizer(web.seed))  # fmt: skip

        write = shipped_or("tiny-internvl", settings, train)  # the default's comes trained
    else:

        def write(local):
            save_tiny_teacher(local, max_tiles=teacher.max_tiles,
                              hidden_size=teacher.tiny.hidden_size, layers=teacher.tiny.layers,
                              tile=teacher.tiny.tile_size)

    model_folder(layout.teacher(), "tiny-internvl", settings, write, layout.local_cache("teacher"))
    return storage.join(layout.teacher(), "tiny-internvl")


def recaption_sources(config: RunConfig):
    """The sources the run recaptions (all of them unless `recaption.sources` names some)."""
    wanted = set(config.recaption.sources) or {s.name for s in config.sources}
    return [s for s in config.sources if s.name in wanted]


def recaption_one(config: RunConfig, source) -> dict:
    """Recaptions one source's kept samples; shards already captioned are skipped."""
    ensure_ray(config.ray)
    job = RecaptionJob(teacher_path(config), config.teacher, config.cleaning, config.recaption)
    layout = RunLayout(config.run_root)
    report = job.run(layout.raw(source.name), layout.filtered(source.name),
                     layout.captions(config.teacher.name, source.name))  # fmt: skip
    return {"source": source.name, **report}


def recaption_markdown(report: dict, config: RunConfig) -> str:
    from recaption.samples import caption_samples, samples_markdown

    teacher = config.teacher.name
    samples = caption_samples(RunLayout(config.run_root), teacher, report["source"])
    return (f"## recaption {report['source']} with {teacher}\n\n" + report_table(report)
            + "\n\n" + samples_markdown(samples))
