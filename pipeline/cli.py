"""The ``vigil`` command line."""
from __future__ import annotations

import argparse
import logging
import sys
from importlib import resources
from typing import Sequence

from pipeline.config import DEFAULT_CONFIG, ConfigError, load_config

log = logging.getLogger("vigil")


def _add_common(parser: argparse.ArgumentParser, config_required: bool) -> None:
    parser.add_argument(
        "--config", "-c", required=config_required, metavar="FILE",
        help="TOML configuration file" + ("" if config_required else " (default: the built-in demo config)"),
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one config key, e.g. --set pipeline.shards=8 (repeatable; beats VIGIL_* env vars)",
    )
    parser.add_argument("--run-dir", metavar="DIR", help="directory for alerts, dead letters and summaries (run.run_dir)")
    parser.add_argument("--metrics-port", type=int, metavar="PORT", help="Prometheus endpoint port (metrics.port, default 9108)")
    parser.add_argument("--metrics-host", metavar="ADDR", help="Prometheus endpoint bind address (metrics.host)")
    parser.add_argument("--no-metrics", action="store_true", help="do not serve the metrics endpoint")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vigil",
        description="Streaming anomaly and drift detection: events in, alerts and dead letters out, metrics for Prometheus.",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log verbosity (default INFO)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help="what to do (each has its own --help)")

    demo = commands.add_parser(
        "demo", help="run the built-in synthetic stream end to end and score it against ground truth",
        description="Generate a synthetic stream (daily seasonality, noise, injected spikes, level shifts and "
        "drifts, malformed events), run it through the live dataflow and print a summary with precision and recall.",
    )
    _add_common(demo, config_required=False)
    demo.add_argument("--seed", type=int, help="random seed of the stream (demo.seed, default 7); same seed, same output")
    demo.add_argument("--events", type=int, help="number of events (demo.events, default 200000)")
    demo.add_argument("--entities", type=int, help="number of entities (demo.entities, default 50)")
    demo.add_argument("--bad-rate", type=float, help="share of malformed events, 0..1 (demo.bad_rate, default 0.002)")
    demo.add_argument("--rate", type=float, help="events per second, 0 for as fast as possible (demo.rate)")
    demo.add_argument("--no-progress", action="store_true", help="do not draw the progress bar")

    run = commands.add_parser(
        "run", help="run the pipeline described by a config file",
        description="Run the configured source through the operators into the configured sinks. A file source is "
        "bounded: the run ends at its last line and writes its outputs in source order.",
    )
    _add_common(run, config_required=True)
    run.add_argument("--workers", type=int, default=1, metavar="N", help="Bytewax worker threads in this process (default 1)")

    config = commands.add_parser("config", help="check or print configuration", description="Configuration helpers.")
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="ACTION", help="check a file or print the example")
    check = config_commands.add_parser(
        "check", help="validate a config file, reporting every error with its key",
        description="Validate FILE with environment and --set overrides applied. Exit 0 when valid, 2 otherwise.",
    )
    check.add_argument("file", metavar="FILE", help="TOML configuration file")
    check.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override one key before checking")
    config_commands.add_parser(
        "example", help="print the annotated default configuration",
        description="Print the annotated built-in configuration, a starting point for your own.",
    )
    return parser


def _overrides(args: argparse.Namespace) -> list[str]:
    """Dedicated flags become --set overrides, so they share one precedence rule."""
    overrides = list(args.overrides)
    flag_keys = {
        "run_dir": "run.run_dir", "metrics_port": "metrics.port", "metrics_host": "metrics.host",
        "seed": "demo.seed", "events": "demo.events", "entities": "demo.entities",
        "bad_rate": "demo.bad_rate", "rate": "demo.rate",
    }
    for attribute, key in flag_keys.items():
        value = getattr(args, attribute, None)
        if value is not None:
            overrides.append(f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}")
    if getattr(args, "no_metrics", False):
        overrides.append("metrics.enabled=false")
    return overrides


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "config":
            return _config_command(args)
        config = load_config(args.config, _overrides(args))
        if args.command == "demo":
            from pipeline.demo import run_demo

            run_demo(config, show_progress=not args.no_progress)
            return 0
        from pipeline.runner import configured_source, run_pipeline

        report = run_pipeline(config, configured_source(config), bounded=config.source.type == "file", workers=args.workers)
        log.info("run finished in %.1f s; outputs in %s", report.elapsed_seconds, report.run_dir)
        return 0
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _config_command(args: argparse.Namespace) -> int:
    if args.config_command == "example":
        sys.stdout.write(resources.files("pipeline").joinpath(DEFAULT_CONFIG).read_text())
        return 0
    try:
        load_config(args.file, args.overrides)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.file}: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
