"""The ``vigil`` command line."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from pipeline.config import DEFAULT_CONFIG, ConfigError, ConfigIssue, load_config
from pipeline.evaluation.score import DETECTORS as SCORE_DETECTORS
from pipeline.evaluation.score import TIMESTAMP_UNITS as SCORE_TIMESTAMP_UNITS
from operators.registry import OperatorFailuresExceeded
from pipeline.engine.kafka import BrokerUnreachable, BrokerWaitStopped, DeliveryError, quiet_client_logs
from pipeline.engine.resources import ResourceError

# The keys of pipeline.evaluation.tabular.DETECTORS, whose module imports torch: a test keeps the two equal.
TABULAR_DETECTORS = ["knn-rshash", "knn", "iforest", "xstream", "loda", "rshash", "apre-mss", "apre", "mse-ae",
                     "river-hst", "zscore"]

log = logging.getLogger("vigil")


class _PrintVersion(argparse.Action):
    """``--version``: the installed package's version, looked up only when asked (reading package metadata is slow)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args) -> None:
        from pipeline.engine.metrics import _version  # the version vigil_build reports

        print(f"vigil {_version()}")
        parser.exit()


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


def _add_brokers(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap-servers", metavar="HOST:PORT,...",
                        help="Kafka bootstrap servers, comma-separated (kafka.bootstrap_servers)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vigil",
        description="Streaming anomaly and drift detection: events in, alerts and dead letters out, metrics for Prometheus.",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="log verbosity (default INFO)")
    parser.add_argument("--version", action=_PrintVersion, help="print vigil's version and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     help="what to do (each has its own --help)")

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
    demo.add_argument(
        "--broker", choices=["embedded"],
        help="go through Kafka: start the embedded Tansu broker, produce the stream into a topic and tail it "
        "with the live consumer (default: feed the dataflow directly)",
    )

    run = commands.add_parser(
        "run", help="run the pipeline described by a config file",
        description="Run the configured source through the operators into the configured sinks. A Kafka source "
        "in tail mode runs until SIGTERM or SIGINT, which stop it cleanly (in-flight batches finish, sinks flush, "
        "a final snapshot is taken). A file source, or a Kafka source in bounded mode, ends at the end of its input "
        "and writes its file outputs in source order; it exits 1 when it could decode none of its events. A summary of "
        "the events, dead letters and alerts goes to stdout at the end (to stderr when a sink writes to stdout). "
        "Several processes form one cluster with -i and -a.",
    )
    _add_common(run, config_required=True)
    _add_brokers(run)
    run.add_argument("-w", "--workers", type=int, default=1, metavar="N",
                     help="Bytewax worker threads in this process (default 1; prefer processes, see -i/-a)")
    run.add_argument("-i", "--process-id", type=int, metavar="ID",
                     help="this process's index in the cluster given by -a (0-based)")
    run.add_argument("-a", "--addresses", metavar="HOST:PORT;...",
                     help="every cluster process's host:port for Bytewax's exchange, separated by ';', "
                     "the same list and order in every process")
    run.add_argument("--no-progress", action="store_true",
                     help="do not draw the progress bar of a bounded run (drawn by a single process only)")

    replay = commands.add_parser(
        "replay", help="run the operators over a bounded slice of historical Kafka topics",
        description="Replay a slice of one or more topics through the configured operators into a run directory of "
        "its own (or alerts into a separate topic), with its own state and no offset commits. Same slice, "
        "byte-identical output.",
    )
    _add_common(replay, config_required=False)
    _add_brokers(replay)
    replay.add_argument("--topic", dest="topics", action="append", metavar="TOPIC",
                        help="topic to replay (repeatable; default: source.topics of the config)")
    replay.add_argument("--from", dest="start", required=True, metavar="WHEN",
                        help="'beginning', an RFC 3339 time (records older than it are skipped), or "
                        "PARTITION:OFFSET,... (partitions not listed start at the beginning)")
    replay.add_argument("--to", dest="end", default="end", metavar="WHEN",
                        help="'end' (the end offsets when the replay starts; default) or an RFC 3339 time (exclusive)")
    replay.add_argument("--alerts-topic", metavar="TOPIC", help="write alerts to this topic instead of alerts.jsonl")
    replay.add_argument("--scores", action="store_true", help="also write every event's scores to scores.jsonl")
    replay.add_argument("--no-progress", action="store_true", help="do not draw the progress bar")

    evaluate = commands.add_parser("evaluate", help="offline evaluation of detectors on labelled data",
                                   description="Offline evaluation on labelled data.")
    evaluate_kinds = evaluate.add_subparsers(dest="evaluate_kind", required=True, metavar="KIND",
                                             help="the kind of labelled data")
    tabular = evaluate_kinds.add_parser(
        "tabular", help="ROC-AUC and average precision of a detector on a labelled table",
        description="Run a detector on a labelled table. Both protocols split the rows stratified 50/25/25 "
        "(train/valid/test, seed 42), z-score with the train+valid statistics, learn from train+valid and "
        "score the test part. label-free (default): fixed hyper-parameters (k, m, last epoch), labels used "
        "only for the test metrics, mean over seeds. authors: the authors' LABEL-TUNED selection of k, epoch "
        "and seed on the validation labels (autoencoders only; optimistic by construction).",
    )
    tabular.add_argument("--data", required=True, metavar="FILE",
                         help=".mat (ODDS X, y), .npz (X, y) or .csv (label last; 1 = outlier)")
    tabular.add_argument("--detector", default=TABULAR_DETECTORS[0], choices=TABULAR_DETECTORS,
                         help="detector (default knn-rshash: the mean surprise of the distance to the 50 nearest of the "
                         "last 2,048 rows and of the rarity in 100 random-subspace grids; iforest: scikit-learn's "
                         "IsolationForest; xstream, loda, rshash: PySAD's; the baselines come from the baselines extra)")
    tabular.add_argument("--protocol", default="label-free", choices=["label-free", "prequential", "authors"],
                         help="label-free split (default), prequential (a seeded order, each row scored before it is "
                         "learned; all but the autoencoders) or the authors' label-tuned selection")
    tabular.add_argument("--epochs", type=int, default=None, metavar="N",
                         help="autoencoder training epochs, full batch (default 5000, the authors' run script)")
    tabular.add_argument("--k", type=int, default=65, metavar="K",
                         help="label-free: mean-shift neighbours, the point included (default 65); authors: k is tuned")
    tabular.add_argument("--k-max", type=int, default=100, metavar="K", help="authors: largest k tried (default 100)")
    tabular.add_argument("--iterations", type=int, default=1, metavar="M", help="mean-shift iterations (default 1)")
    tabular.add_argument("--seeds", default=None, metavar="S,S,...",
                         help="seeds: averaged (label-free, default 0-4) or the inits selected among (authors, default 0-19)")
    tabular.add_argument("--eval-every", type=int, default=None, metavar="N",
                         help="authors: score the validation part every N epochs and after the last "
                         "(default 10; the authors use 1)")
    tabular.add_argument("--json", action="store_true", help="print one JSON object (roc_auc, average_precision, per_seed, ...)")
    fairness = evaluate_kinds.add_parser(
        "fairness", help="accuracy and demographic parity of online learners (Aranyani and baselines) on a table",
        description="Stream a CSV table, in a seeded order, through Aranyani (online group-fair oblique forests) at "
        "each lambda and through the baselines (online logistic regression, an MLP, river's Hoeffding Adaptive Tree, "
        "majority mixing), predicting each row before learning from it; report time-averaged accuracy and "
        "demographic parity, means over the seeds. The storage-based reservoir baseline runs at each lambda too.",
    )
    fairness.add_argument("--data", required=True, metavar="FILE", help="CSV with a header")
    fairness.add_argument("--protected", required=True, metavar="COL", help="the protected attribute (two values)")
    fairness.add_argument("--label", required=True, metavar="COL", help="the label (two values; the later in sorted "
                          "order is the positive class)")
    fairness.add_argument("--lambda", dest="fairness", default="0,1,10", metavar="L,L,...",
                          help="Aranyani's fairness weights (default 0,1,10)")
    fairness.add_argument("--seeds", type=int, default=3, metavar="N", help="seeds 0 .. N-1, one row order each (default 3)")
    fairness.add_argument("--methods", default=None, metavar="M,M,...", help="methods (default all: aranyani, "
                          "reservoir, logistic, mlp, hoeffding_adaptive_tree, majority)")
    fairness.add_argument("--json", action="store_true", help="print one JSON object: results, one per method and lambda")
    fairness.add_argument("--plot", metavar="PNG", help="write the accuracy-vs-parity trade-off plot (needs matplotlib, "
                          "the plots extra)")

    nab = evaluate_kinds.add_parser(
        "nab", help="the Numenta Anomaly Benchmark score of a detector on a directory of series",
        description="Score every series of the windows file found under DIR with the detector (as vigil score does), "
        "choose one threshold for the whole set by NAB's sweep, and print the normalised score for the three "
        "profiles and a per-file table.")
    nab.add_argument("--data-dir", required=True, metavar="DIR", help="NAB's data directory (category/name.csv files)")
    nab.add_argument("--windows", required=True, metavar="FILE", help="NAB's combined_windows.json")
    nab.add_argument("--detector", default="baseline", choices=list(SCORE_DETECTORS),
                     help="detector (default baseline, thresholded on its first-crossing .alert score)")
    nab.add_argument("--json", action="store_true", help="print one JSON object: profiles and files")
    cross = evaluate_kinds.add_parser(
        "cross-dataset", help="every detector with its defaults on ASD, NAB and the demo, thresholds chosen leave one "
        "dataset out",
        description="Score every detector, with its default parameters and no label seen, on each dataset (ASD "
        "multivariate, ASD per metric, NAB, the demo stream): mean VUS-PR and AUC-PR per dataset with ranks, NAB "
        "scores at the threshold chosen on the other datasets (leave one dataset out), at the dataset's own best "
        "threshold (in-sample) and of the live alerts, root-cause hit rates on ASD, and run times.")
    cross.add_argument("--data", default="../shared/data", metavar="DIR",
                       help="the folder holding asd/ and nab/ (default ../shared/data)")
    cross.add_argument("--datasets", default="asd,nab,demo,asd_univariate", metavar="D,D,...",
                       help="datasets, of asd, nab, demo, asd_univariate (default all)")
    cross.add_argument("--detectors", metavar="NAME,...",
                       help="detectors (default: the registered default operators, then train_zscore, rolling_zscore "
                       "and river_hst)")
    cross.add_argument("--demo-events", type=int, default=50_000, metavar="N",
                       help="events of the demo stream (default 50000, seed 7)")
    cross.add_argument("--demo-entities", type=int, default=10, metavar="N",
                       help="entities of the demo stream (default 10: 5,000 one-minute rows each at 50,000 events)")
    cross.add_argument("--json", action="store_true", help="print one JSON object with every number")
    cross.add_argument("--output-md", metavar="FILE", help="also write the results page (Markdown) to FILE")

    score = commands.add_parser(
        "score", help="an anomaly score per row of a CSV time series",
        description="Stream a CSV time series through a detector, causally (a row's score depends on the rows before "
        "it only), and write timestamp,value,anomaly_score (timestamp,key,value,anomaly_score with --key) with the "
        "score in [0, 1].")
    score.add_argument("--input", required=True, metavar="FILE", help="CSV with a header")
    score.add_argument("--timestamp-column", default="timestamp", metavar="C", help="default timestamp")
    score.add_argument("--timestamp-unit", default="rfc3339", choices=list(SCORE_TIMESTAMP_UNITS),
                       help="rfc3339 (default): ISO 8601 dates and times, e.g. 2014-04-10 07:15:00 or "
                       "2026-01-01T00:00:00Z; s, ms, us or ns: epoch numbers in that unit")
    score.add_argument("--value-column", default="value", metavar="V", help="default value")
    score.add_argument("--key", metavar="K", help="a column naming the series of each row (one detector state each)")
    score.add_argument("--detector", default="baseline", choices=list(SCORE_DETECTORS),
                       help="detector (default baseline)")
    score.add_argument("--output", required=True, metavar="FILE", help="the scores, as CSV")

    report = commands.add_parser(
        "report", help="an HTML report with plots of a run directory or of vigil score outputs",
        description="Write RUN_DIR/report.html (self-contained, images embedded) and RUN_DIR/report/*.png: per series, "
        "the values, scores, threshold, alerts, drift alerts and labelled windows; tables of alerts by operator and "
        "severity and, when labels exist, quality figures. RUN_DIR is what vigil demo, run or replay wrote, or a "
        "directory of vigil score CSV files (with an optional NAB-style windows.json).",
    )
    report.add_argument("run_dir", metavar="RUN_DIR", type=Path,
                        help="a run directory (scores.jsonl, alerts.jsonl) or a directory of vigil score CSV files")
    report.add_argument("--threshold", type=float, help="the detection threshold drawn and applied to vigil score outputs")
    report.add_argument("--max-series", type=int, default=12, help="series plotted at most (default 12)")

    init = commands.add_parser(
        "init", help="write a first config inferred from a sample of your events",
        description="Read a sample of JSON events (a JSON-lines file, or the first records of a Kafka topic), infer "
        "their shape (preset; for flat JSON the entity key, the event time and its unit; the numeric fields) and "
        "write a short commented config with an outlier and a drift operator on those fields and file sinks. What "
        "was inferred, and why, goes to stderr, one line each.",
    )
    init_sample = init.add_mutually_exclusive_group(required=True)
    init_sample.add_argument("--sample", metavar="FILE", help="JSON lines, one event per line")
    init_sample.add_argument("--topic", metavar="TOPIC", help="read the sample from this Kafka topic, from the beginning")
    _add_brokers(init)
    init.add_argument("--records", type=int, default=10_000, metavar="N", help="records to read (default 10000)")
    init.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                      help="--topic: stop reading after this long, with fewer records (default 10)")
    init.add_argument("--output", "-o", default="vigil.toml", metavar="FILE",
                      help="the config to write, '-' for stdout (default vigil.toml)")
    init.add_argument("--force", action="store_true", help="overwrite --output if it exists")

    config = commands.add_parser("config", help="check or print configuration", description="Configuration helpers.")
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="ACTION",
                                            help="check a file or print the example")
    check = config_commands.add_parser(
        "check", help="validate a config file, reporting every error with its key",
        description="Validate FILE with environment and --set overrides applied. With --sample, also decode a sample "
        "as a run would and report the dead letters by reason and every operator field no decoded event holds. Exit "
        "0 when valid (and the whole sample decodes with every field), 1 when the sample does not, 2 when FILE is "
        "not valid.",
    )
    check.add_argument("file", metavar="FILE", help="TOML configuration file")
    check.add_argument("--sample", metavar="SAMPLE", help="JSON lines to decode with the config's schema")
    check.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override one key before checking")
    config_commands.add_parser(
        "example", help="print the annotated default configuration",
        description="Print the annotated built-in configuration, a starting point for your own.",
    )
    params = config_commands.add_parser(
        "params", help="list every operator type's parameters with defaults, bounds and meaning",
        description="Print the [operators.params] keys of each operator type (or of TYPE): type, default, "
        "constraint and one line of documentation, from the operators' declared schema.",
    )
    params.add_argument("type", nargs="?", metavar="TYPE", help="one operator type (default: all of them)")
    return parser


def _overrides(args: argparse.Namespace) -> list[str]:
    """Dedicated flags become --set overrides, so they share one precedence rule."""
    overrides = list(args.overrides)
    flag_keys = {
        "run_dir": "run.run_dir", "metrics_port": "metrics.port", "metrics_host": "metrics.host",
        "seed": "demo.seed", "events": "demo.events", "entities": "demo.entities",
        "bad_rate": "demo.bad_rate", "rate": "demo.rate",
    }
    if args.command == "replay":
        del flag_keys["run_dir"]  # a replay's directory is its own, never run.run_dir
    for attribute, key in flag_keys.items():
        value = getattr(args, attribute, None)
        if value is not None:
            overrides.append(f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}")
    if getattr(args, "bootstrap_servers", None):
        servers = [server.strip() for server in args.bootstrap_servers.split(",") if server.strip()]
        overrides.append("kafka.bootstrap_servers=" + json.dumps(servers))
    if getattr(args, "no_metrics", False):
        overrides.append("metrics.enabled=false")
    return overrides


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)  # in here: --help and --version print too
        logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        quiet_client_logs(logging.getLevelName(args.log_level))
        if args.command == "config":
            return _config_command(args)
        if args.command == "init":
            return _init_command(args)
        if args.command == "evaluate" and args.evaluate_kind == "fairness":
            return _fairness_command(args)
        if args.command == "evaluate" and args.evaluate_kind == "nab":
            return _nab_command(args)
        if args.command == "evaluate" and args.evaluate_kind == "cross-dataset":
            return _cross_dataset_command(args)
        if args.command == "score":
            return _score_command(args)
        if args.command == "report":
            from pipeline.report import write_report

            print(write_report(args.run_dir, threshold=args.threshold, max_series=args.max_series))
            return 0
        if args.command == "evaluate":
            return _evaluate_command(args)
        config = load_config(args.config, _overrides(args))
        if args.command == "demo":
            from pipeline.demo.command import run_demo

            run_demo(config, show_progress=not args.no_progress, broker=args.broker)
            return 0
        if args.command == "replay":
            return _replay_command(args, config)
        return _run_command(args, config)
    except BrokerWaitStopped as error:
        log.info("%s", error)
        return 0
    except (OperatorFailuresExceeded, DeliveryError) as error:
        log.error("stopping: %s", error)
        return 1
    except (ResourceError, BrokerUnreachable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return _stdout_closed()
    except KeyboardInterrupt:
        return 130
    finally:
        try:
            sys.stdout.flush()  # now, where a closed pipe is handled, rather than at exit, where it is an ignored traceback
        except BrokenPipeError:
            sys.exit(_stdout_closed())


def _stdout_closed() -> int:
    """The reader of our output went away (``vigil config params | head -1``): the rest goes to /dev/null, so that
    nothing fails again at exit, and the exit status is a SIGPIPE death's, as a shell reports it."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 141


def _run_command(args: argparse.Namespace, config) -> int:
    from pipeline.engine.progress import Progress
    from pipeline.engine.runner import Cluster, configured_source, is_bounded, run_pipeline
    from pipeline.engine.summary import dead_letters_at, format_counts, summarize

    addresses = [a.strip() for a in args.addresses.split(";") if a.strip()] if args.addresses else None
    if (args.process_id is None) != (addresses is None):
        raise ValueError("-i/--process-id and -a/--addresses go together")
    if addresses and not 0 <= args.process_id < len(addresses):
        raise ValueError(f"-i {args.process_id} is not an index into the {len(addresses)} addresses given with -a")
    cluster = Cluster(workers=args.workers, process_id=args.process_id, addresses=addresses)
    bounded = is_bounded(config)
    # A process reads only its share of the input, whose size it does not know: one process draws it.
    progress = Progress(0, label="records", enabled=bounded and cluster.processes == 1 and not args.no_progress)
    source = lambda metrics: configured_source(  # noqa: E731
        config, metrics, progress.advance, on_size=progress.start if progress.enabled else None)
    try:
        report = run_pipeline(config, source, bounded=bounded, cluster=cluster)
    finally:
        progress.close()
    summary = summarize(report)
    sinks = (config.sinks.alerts, config.sinks.dead_letters, config.sinks.scores)
    print("\n".join([f"Vigil run summary (run dir {summary['run_dir']})", *format_counts(summary)]),
          file=sys.stderr if any(sink.type == "stdout" for sink in sinks) else sys.stdout)  # stdout's JSON lines stay so
    log.info("run %s after %.1f s; outputs in %s", "stopped" if report.stopped else "finished",
             report.elapsed_seconds, report.run_dir)
    if bounded and summary["invalid_events"] and not summary["valid_events"]:
        reason, count = max(summary["invalid_by_reason"].items(), key=lambda item: item[1])
        log.error("no event could be decoded: %d were dead-lettered, top reason %s (%d); the dead letters %s",
                  summary["invalid_events"], reason, count, dead_letters_at(config, report))
        return 1
    return 0


def _replay_command(args: argparse.Namespace, config) -> int:
    from pipeline.engine.replay import SliceSpec, replay_config, run_replay

    topics = args.topics or config.source.topics
    if not topics:
        raise ConfigError([ConfigIssue("--topic", "no topic to replay", "pass --topic or set source.topics")], "replay")
    run_dir = args.run_dir or f"runs/replay-{'-'.join(topics)}"
    spec = SliceSpec.parse(args.start, args.end)
    run_replay(replay_config(config, topics, run_dir, args.alerts_topic, args.scores), spec,
               show_progress=not args.no_progress)
    return 0


def _evaluate_command(args: argparse.Namespace) -> int:
    from pipeline.evaluation.tabular import DEFAULT_EPOCHS, AuthorsProtocol, Prequential, Protocol, evaluate, load_table

    epochs = DEFAULT_EPOCHS if args.epochs is None else args.epochs
    if args.protocol == "authors":
        defaults = AuthorsProtocol()
        seeds = defaults.seeds if args.seeds is None else tuple(int(seed) for seed in args.seeds.split(","))
        protocol = AuthorsProtocol(epochs=epochs, iterations=args.iterations, seeds=seeds, k_max=args.k_max,
                                   eval_every=defaults.eval_every if args.eval_every is None else args.eval_every)
    else:
        if args.eval_every is not None:
            raise ValueError("--eval-every belongs to --protocol authors (label-free scores the last epoch)")
        seeds = Protocol().seeds if args.seeds is None else tuple(int(seed) for seed in args.seeds.split(","))
        protocol = Protocol(epochs=epochs, k=args.k, iterations=args.iterations, seeds=seeds)
    if args.protocol == "prequential":
        protocol = Prequential() if args.seeds is None else Prequential(seeds=tuple(int(s) for s in args.seeds.split(",")))
    X, y = load_table(args.data)
    result = evaluate(X, y, args.detector, protocol)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    elif args.protocol == "authors":
        chosen = f"k {result['k']}, " if result["k"] is not None else ""
        print(f"{args.detector} on {args.data} ({result['rows']} rows, {result['outliers']} outliers, test part "
              f"{result['split']['test']} rows): LABEL-TUNED (authors' protocol: {chosen}epoch {result['selected_epoch']} and "
              f"seed {result['selected_seed']} of {len(seeds)} chosen on validation labels): "
              f"test ROC-AUC {result['roc_auc']:.4f}, average precision {result['average_precision']:.4f}")
        if "without_mss" in result:
            print(f"  same runs without MSS (label-tuned): test ROC-AUC {result['without_mss']['roc_auc']:.4f}, "
                  f"average precision {result['without_mss']['average_precision']:.4f}")
    elif args.protocol == "prequential":
        print(f"{args.detector} on {args.data} ({result['rows']} rows, {result['outliers']} outliers, prequential, "
              f"scored after {result['warmup_rows']} warm-up rows, {len(result['seeds'])} orders): ROC-AUC "
              f"{result['roc_auc']:.4f}, average precision {result['average_precision']:.4f}")
    else:
        print(f"{args.detector} on {args.data} ({result['rows']} rows, {result['outliers']} outliers, test part "
              f"{result['split']['test']} rows, label-free, {len(seeds)} seeds): ROC-AUC {result['roc_auc']:.4f}, "
              f"average precision {result['average_precision']:.4f}")
    return 0


def _fairness_command(args: argparse.Namespace) -> int:
    from pipeline.evaluation.fairness import FAIR_METHODS, METHODS, compare, encode_table, plot_trade_off, read_table

    weights = tuple(float(value) for value in args.fairness.split(","))
    methods = METHODS if args.methods is None else tuple(name.strip() for name in args.methods.split(","))
    unknown = [name for name in methods if name not in METHODS]
    if unknown:
        raise ValueError(f"--methods: unknown {', '.join(unknown)} (known: {', '.join(METHODS)})")
    x, y, groups = encode_table(read_table(args.data), args.protected, args.label)
    results = compare(x, y, groups, fairness=weights, seeds=args.seeds, methods=methods)
    if args.plot:
        plot_trade_off(results, args.plot, f"{Path(args.data).name}: protected {args.protected}, {args.seeds} seeds")
    if args.json:
        print(json.dumps({"data": args.data, "rows": len(y), "seeds": args.seeds, "results": results}, sort_keys=True))
        return 0
    print(f"{args.data}: {len(y)} rows, protected {args.protected}, label {args.label}, means over {args.seeds} seeds "
          "(time-averaged, prequential)")
    print(f"  {'method':<24}{'lambda':>8}{'accuracy':>10}{'parity':>9}")
    for row in results:
        shown = f"{row['lambda']:g}" if row["method"] in FAIR_METHODS else "-"
        print(f"  {row['method']:<24}{shown:>8}{row['accuracy']:>10.4f}{row['demographic_parity']:>9.4f}")
    return 0


def _score_command(args: argparse.Namespace) -> int:
    from pipeline.evaluation.score import read_series, score_series, write_scores

    table = read_series(args.input, args.timestamp_column, args.value_column, args.key, args.timestamp_unit)
    for problem in table.problems:
        print(f"warning: {args.input}: {problem}", file=sys.stderr)
    scores = score_series(table, args.detector)
    write_scores(args.output, table, scores)
    print(f"{args.output}: {len(scores)} rows scored by {args.detector}")
    return 0


def _nab_command(args: argparse.Namespace) -> int:
    import numpy as np

    from pipeline.evaluation.nab import PROFILES, best_score, load_corpus, sweep
    from pipeline.evaluation.score import SeriesTable, score_series

    corpus = load_corpus(args.data_dir, args.windows)
    if not corpus:
        raise ValueError(f"no series of {args.windows} under {args.data_dir}")
    scores = [score_series(SeriesTable([str(t) for t in s.timestamps], s.timestamps.astype("datetime64[ms]").astype("int64"),
                                       s.values, np.full(len(s.values), "series", dtype=object)), args.detector,
                           detection=True)
              for s in corpus]
    profiles = {}
    for profile in PROFILES:
        threshold, score = best_score(corpus, scores, profile)
        profiles[profile] = {"threshold": threshold, "score": score}
    threshold = profiles["standard"]["threshold"]
    files = []
    for series, values in zip(corpus, scores):
        levels, raw = sweep([series], [values])
        files.append({"file": series.name, "rows": len(values), "windows": len(series.windows),
                      "detections": int((values >= threshold).sum()),
                      "raw_standard": float(raw[np.flatnonzero(levels >= threshold)[-1]]) + 0.0})
    if args.json:
        print(json.dumps({"detector": args.detector, "files": files, "profiles": profiles}, sort_keys=True))
        return 0
    print(f"NAB, {args.detector}, {len(corpus)} series, threshold optimised on them: "
          + ", ".join(f"{name} {p['score']:.2f}" for name, p in profiles.items()))
    print(f"  {'file':<58}{'rows':>7}{'windows':>8}{'detections':>11}{'raw (standard)':>16}")
    for row in files:
        print(f"  {row['file']:<58}{row['rows']:>7}{row['windows']:>8}{row['detections']:>11}{row['raw_standard']:>16.3f}")
    return 0


def _cross_dataset_command(args: argparse.Namespace) -> int:
    from pipeline.evaluation.cross_dataset import (DEMO_SEED, default_detectors, evaluate, load_datasets,
                                                   named_detectors, plain, render)

    names = [name.strip() for name in args.datasets.split(",") if name.strip()]
    detectors = default_detectors() if args.detectors is None else named_detectors(
        [name.strip() for name in args.detectors.split(",") if name.strip()])
    stream, fields = None, ()
    if "demo" in names:
        from pipeline.demo.synthetic import FIELDS, SyntheticStream

        if args.demo_events < 1 or args.demo_entities < 1:
            raise ValueError("--demo-events and --demo-entities must be at least 1")
        stream = SyntheticStream(events=args.demo_events, entities=args.demo_entities, seed=DEMO_SEED, bad_rate=0.0)
        fields = FIELDS
    datasets = load_datasets(args.data, names, stream, fields)
    results = evaluate(datasets, detectors, progress=lambda line: print(line, file=sys.stderr))
    if args.output_md:
        import shlex

        command = (f"vigil evaluate cross-dataset --data {shlex.quote(args.data)} --datasets {','.join(names)} "
                   f"--detectors {','.join(d.name for d in detectors)} --demo-events {args.demo_events} "
                   f"--demo-entities {args.demo_entities} --output-md {shlex.quote(args.output_md)}")
        Path(args.output_md).write_text(render(results, [command]))
    if args.json:
        print(json.dumps(plain(results), sort_keys=True))
    else:
        sys.stdout.write(render(results, full=False))
    return 0


def _config_command(args: argparse.Namespace) -> int:
    if args.config_command == "example":
        sys.stdout.write(resources.files("pipeline").joinpath(DEFAULT_CONFIG).read_text())
        return 0
    if args.config_command == "params":
        return _print_params(args.type)
    from operators.registry import OperatorChain
    from pipeline.engine.schema import compile_schema

    try:
        config = load_config(args.file, args.overrides)
        inputs = OperatorChain.build(config.operator_specs(), max_entities=1)
        try:  # the schema compiles as a run would compile it (the config model cannot see the decoders' rules)
            compile_schema(config.source.schema, inputs.numeric_inputs, inputs.text_inputs)
        except ValueError as error:
            key, _, message = str(error).partition(": ")
            issue = ConfigIssue(key, message) if key.startswith("source.schema") else ConfigIssue("source.schema", str(error))
            raise ConfigError([issue], args.file) from None
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.file}: OK")
    if args.sample is None:
        return 0
    from pipeline.init import check_sample

    report = check_sample(config, args.sample)
    print("\n".join(report.lines()))
    return 0 if report.ok else 1


def _init_command(args: argparse.Namespace) -> int:
    import shlex

    from pipeline.init import infer, read_file_sample, read_topic_sample, render

    if bool(args.topic) != bool(args.bootstrap_servers):
        raise ValueError("--topic and --bootstrap-servers go together")
    if args.records < 1:
        raise ValueError("--records must be at least 1")
    output = None if args.output == "-" else Path(args.output)
    if output is not None and output.exists() and not args.force:
        raise ValueError(f"{output} exists; pass --force to overwrite it")
    if args.topic:
        servers = [server.strip() for server in args.bootstrap_servers.split(",") if server.strip()]
        sample = read_topic_sample(args.topic, servers, args.records, args.timeout)
    else:
        sample = read_file_sample(args.sample, args.records)
    inference = infer(sample)
    for note in inference.notes:
        print(note, file=sys.stderr)
    text = render(inference, sample)
    if output is None:
        sys.stdout.write(text)
        return 0
    output.write_text(text)
    check = f"vigil config check {shlex.quote(str(output))}" + ("" if args.topic else f" --sample {shlex.quote(sample.origin)}")
    print(f"wrote {output}: check it with `{check}`, run it with `vigil run --config {shlex.quote(str(output))}`",
          file=sys.stderr)
    return 0


def _print_params(only: str | None) -> int:
    import dataclasses

    from operators.params import describe
    from operators.registry import OPERATOR_TYPES

    if only is not None and only not in OPERATOR_TYPES:
        raise ValueError(f"unknown operator type {only!r}: one of {', '.join(OPERATOR_TYPES)}")

    def rows(params_class: type, prefix: str = ""):
        for (name, type_name, default, doc, constraint) in describe(params_class):
            if dataclasses.is_dataclass(default):
                yield from rows(type(default), f"{prefix}{name}.")
            else:
                yield f"{prefix}{name}", type_name, default, doc, constraint

    for type_name, cls in OPERATOR_TYPES.items():
        if only in (None, type_name):
            print(f"[operators.params] of type = {type_name!r} (kind {cls.kind})")
            for name, kind, default, doc, constraint in rows(cls.Params):
                print(f"  {name} = {default!r}  ({kind}{'; ' + constraint if constraint else ''})\n      {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
