"""`evip`: the command line of an EViP campaign.

Every command takes `--config FILE` (YAML) and trailing `key.path=value` overrides, validated
before any work starts.
"""

from __future__ import annotations

import argparse
import os
import sys

from flows.commands import COMMANDS, NotReadyError
from flows.config import ConfigError, dump_run_config, load_run_config

DEFAULT_CONFIG = "configs/demo.yaml"
PREFECT_STARTUP_S = "180"
"""Seconds `evip run` waits for Prefect's local server to start (Prefect's own default: 20)."""
CONFIG_COMMANDS = {
    **COMMANDS,
    "run": "run the whole campaign as a Prefect flow: ingest, recaption, stage shards, model, "
           "train and evaluate each stage",
    "serve": "serve every flow (campaign, ingest, recaption, stages, model, train, evaluate) as "
             "a Prefect deployment and run what the UI triggers; starts a Prefect server on "
             "127.0.0.1 unless PREFECT_API_URL is set",
    "deploy": "deploy every flow to a Prefect work pool (--pool) of the server at "
              "PREFECT_API_URL, the config as each deployment's default; its workers (process, "
              "Docker, Kubernetes) run what the UI triggers",
    "model-info": "parameter groups and active parameters per token",
    "plan": "the campaign's cost before any work: per stage samples, tokens, FLOPs, GPU-hours "
            "(--paper: the paper's Mono-InternVL-2B setting)",
    "status": "per step and source: units complete / total, settings match, last error",
    "check": "offline, before any GPU is spent: sources' columns, the model at full size on the "
             "meta device, and per training stage parameters, steps, memory per GPU and whether "
             "it fits (exit 1 with the fields to change when a stage does not)",
}


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=None,
        help=f"run config YAML (defaults built in; demo: {DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE",
        help="dotlist overrides, e.g. model.vision.tile_size=448 model.llm_path=/ckpt/internlm2",
    )  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evip",
        description="Turn a pretrained LLM into a monolithic multimodal LLM (Mono-InternVL) and "
        "run its Endogenous Visual Pre-training campaign.",
        epilog="Every setting, its default and its meaning: evip config --keys",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("config", help="validate a run config and print it, defaults filled")
    _add_config_args(show)
    show.add_argument("--keys", action="store_true",
                      help="list every setting, its default and meaning, then exit")  # fmt: skip
    for name, help_text in CONFIG_COMMANDS.items():
        command = commands.add_parser(name, help=help_text, description=help_text)
        _add_config_args(command)
        if name == "serve":
            command.add_argument("--port", type=int, default=4200,
                                 help="port of the Prefect server started on 127.0.0.1 when "
                                      "PREFECT_API_URL is not set")  # fmt: skip
        if name == "deploy":
            command.add_argument("--pool", required=True,
                                 help="the work pool (create it first: prefect work-pool create "
                                      "NAME --type process)")  # fmt: skip
            command.add_argument("--image", default=None,
                                 help="image with evip installed, for Docker / Kubernetes pools")
        if name == "plan":
            command.add_argument("--paper", action="store_true",
                                 help="also show the paper's setting: InternLM2-1.8B, S1.1/S1.2/"
                                      "S1.3 on 922M/258M/143M samples")  # fmt: skip
            command.add_argument("--gpu-peak-tflops", type=float, default=989.0,
                                 help="peak dense bf16 TFLOP/s of one GPU (H100: 989, A100: 312)")
            command.add_argument("--mfu", type=float, default=0.4,
                                 help="model FLOP utilisation to assume (0-1]")  # fmt: skip
    trace = commands.add_parser(
        "trace", help="one sample's lineage: source row, downloads, filter verdict, captions, "
        "stage shards", usage="evip trace [--config FILE] [KEY=VALUE ...] SAMPLE")
    trace.add_argument("--config", default=None, help="run config YAML")
    trace.add_argument("words", nargs="+", metavar="[KEY=VALUE ...] SAMPLE",
                       help="overrides, then a sample id (16 hex digits) or an image URL")
    convert = commands.add_parser(
        "convert", help="convert a checkpoint between evip's format and the official layout"
    )
    convert.add_argument("direction", choices=["to-official", "from-official"])
    convert.add_argument("source", help="checkpoint directory to read")
    convert.add_argument("target", help="checkpoint directory to write")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs one command; bad input (config, source files, checkpoints) exits 2 with a message."""
    # No network here or on many clusters: Prefect's telemetry would only log errors.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # A first start creates and migrates Prefect's database, which outlasts Prefect's 20 s limit
    # for its local server on a small or busy machine (`evip run` died there). Set before Prefect
    # is imported; a user's own setting wins.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", PREFECT_STARTUP_S)
    from pipelines.sources import SourceError

    args = _parser().parse_args(argv)
    try:
        if args.command == "convert":
            return _convert(args.direction, args.source, args.target)
        if args.command == "config" and args.keys:
            from flows.config import describe_fields

            print("\n".join(describe_fields()))
            return 0
        if args.command == "trace":
            config = load_run_config(args.config, args.words[:-1])
            return _trace(config, args.words[-1])
        config = load_run_config(args.config, args.overrides)
        if args.command == "plan":
            return _plan(config, args)
        if args.command == "check":
            return _check(config)
        if args.command == "serve":
            from flows.serve import serve

            serve(config, args.port)
            return 0
        if args.command == "deploy":
            from flows.serve import deploy

            try:
                deploy(config, args.pool, args.image)
            except ValueError as error:  # no server, no such pool: said, not a traceback
                print(f"evip: {error}", file=sys.stderr)
                return 2
            return 0
        _run(args.command, config)
    except (ConfigError, SourceError, NotReadyError, FileNotFoundError) as error:
        print(f"evip: {error}", file=sys.stderr)
        return 2
    return 0


def _run(command: str, config) -> None:
    if command == "config":
        print(dump_run_config(config), end="")
    elif command == "model-info":
        from flows.model_demo import llm_path
        from flows.report import parameter_table
        from model.build import build_model
        from model.param_groups import count_parameters

        model, _, _ = build_model(config.model, llm_path(config))
        print(parameter_table(count_parameters(model)))
    elif command in COMMANDS:
        from flows.steps import run_steps, runnable

        run_steps(config, runnable(command))
    elif command == "status":
        from flows.status import run_status, status_table

        print(status_table(run_status(config)))
    elif command == "run":
        from flows.campaign import campaign
        from pipelines.evaluate.campaign import accuracy_line
        from pipelines.layout import RunLayout

        _announce_prefect_database()
        results = campaign(config)
        print(f"report: {RunLayout(config.run_root).report('campaign.md')} (figures beside it; "
              "also Prefect artifacts)")  # fmt: skip
        if "chance" in results.get("evaluate", {}):  # a probe was evaluated
            print(accuracy_line(results["evaluate"]))


def _announce_prefect_database() -> None:
    """Says why a first `evip run` on a machine is quiet for a while: Prefect's local server
    creates its database first."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    url = settings.server.database.connection_url
    url = url.get_secret_value() if url is not None else ""
    path = url.split(":///", 1)[-1]
    if settings.api.url is None and url.startswith("sqlite") and not os.path.exists(path):
        print(f"evip: Prefect's first start here creates its database ({path}); this can take a "
              "minute", flush=True)  # fmt: skip


def _check(config) -> int:
    from flows.check import CheckFailed, check_markdown

    try:
        print(check_markdown(config))
    except CheckFailed as failed:
        print(f"{failed}\n\nevip check: the campaign does not fit as configured", file=sys.stderr)
        return 1
    print("\nevip check: every stage fits")
    return 0


def _plan(config, args) -> int:
    from pydantic import ValidationError

    from flows.plan import plan_markdown
    from pipelines.train.cost import CostOptions

    try:
        options = CostOptions(gpu_peak_tflops=args.gpu_peak_tflops, mfu=args.mfu)
    except ValidationError as error:
        first = error.errors()[0]
        raise ConfigError(f"plan: {first['loc'][0]}: {first['msg']}") from None
    print(plan_markdown(config, options, paper=args.paper))
    return 0


def _trace(config, sample: str) -> int:
    from pipelines.layout import RunLayout
    from pipelines.trace import format_trace, trace_sample

    sources = [s.name for s in config.sources]
    trace = trace_sample(RunLayout(config.run_root), sources, config.teacher.name, sample)
    print(format_trace(trace))
    return 0 if trace["sources"] else 1


TOKENIZER_FILES = ("tokenizer*", "special_tokens_map.json", "added_tokens.json",
                   "tokenization_*.py", "*.model")  # fmt: skip
"""A checkpoint's tokenizer, as files (a remote-code tokenizer's module among them)."""


def _convert(direction: str, source: str, target: str) -> int:
    import shutil
    from pathlib import Path

    from model.from_llm import load_tokenizer
    from model.modeling import MonoInternVLForCausalLM
    from model.official import load_official, save_official

    has_tokenizer = (Path(source) / "tokenizer_config.json").exists()
    if direction == "to-official":
        tokenizer = load_tokenizer(source) if has_tokenizer else None
        save_official(MonoInternVLForCausalLM.from_pretrained(source), target, tokenizer)
    else:
        load_official(source).save_pretrained(target)
        # Copied as files, not loaded: the official InternLM2 tokenizer is remote code.
        for pattern in TOKENIZER_FILES:
            for path in Path(source).glob(pattern):
                shutil.copy2(path, Path(target) / path.name)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
