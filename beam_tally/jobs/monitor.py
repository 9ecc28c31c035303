"""The monitor job: graph wiring (``build_monitor_pipeline``) and the command (``run``).

ReadAccessLogs -> ParseAccessLines -> ComputeTrafficStats (every ``--stats_window`` seconds of
event time) and DetectHighTraffic (the ``--alert_window`` average against ``--threshold``) ->
``stats.jsonl``, ``alerts.jsonl``, ``dead_letters.jsonl`` under ``--output``, and the console;
then ``report.html`` from those files (``beam_tally.report``).
"""

from __future__ import annotations

import sys
from functools import partial

import apache_beam as beam

from beam_tally import console, input_check, metrics, report
from beam_tally.gc_settings import paused
from beam_tally.io.files import SPLIT_BYTES, ReadAccessLogs, WriteJsonLines, WriteToConsole
from beam_tally.io.kafka import MarkDrained, WriteJsonLinesOnce, is_kafka
from beam_tally.io.stream import WriteJsonLinesLive, end_marker, live_source
from beam_tally.options import (
    ConsoleOptions,
    FlinkJobOptions,
    IOOptions,
    MonitorOptions,
    StreamOptions,
    UsageError,
    check_input_output,
    check_source,
    options_help,
    parse_pipeline_args,
)
from beam_tally.runtime import prepare_runner, run_live, run_pipeline, several_workers
from transforms.records import (
    alert_from_json,
    alert_json,
    dead_letter_json,
    stats_from_json,
    stats_json,
)
from transforms.tally import DEAD_LETTERS, METRICS_NAMESPACE
from transforms.traffic import (
    ALERTS,
    LATE,
    RECORDS,
    ComputeTrafficStats,
    DetectHighTraffic,
    ParseAccessLines,
)

MONITOR_SPREAD_BYTES = 64 << 20  # bytes beyond the largest range that take a second worker

OUTPUTS = (
    "stats.jsonl",
    "alerts.jsonl",
    "totals.jsonl",
    "dead_letters.jsonl",
)  # under --output; an earlier run's are replaced

HELP = f"""usage: beam-tally monitor --input GLOB --output DIR [options] [Beam options]
       beam-tally monitor --streaming --source HOST:PORT --output DIR [options]
       beam-tally monitor --streaming --source kafka://HOST:PORT/TOPIC --runner=FlinkRunner
          --output DIR [options] [Flink options]

Reads HTTP access logs (the exercise's CSV, or Common/Combined Log Format as nginx and Apache
write it), prints stats for every --stats_window seconds of event time and a high-traffic alert
when the --alert_window average passes --threshold requests per second, then its recovery, in
event-time order, and a closing summary with every alert and the whole run's totals. Writes
stats.jsonl, alerts.jsonl, totals.jsonl and dead_letters.jsonl under DIR, and report.html, their
charts (a live run rewrites it as it goes, and the open page reloads itself).

Live: --streaming --source HOST:PORT reads what 'beam-tally produce access' serves, prints as
the watermark passes, and writes stats-*.jsonl, alerts-*.jsonl, totals-*.jsonl and
dead_letters-*.jsonl as it goes (a new file of each every --roll_seconds), until the stream
ends, --stop_after seconds pass, or Ctrl-C. A line that arrives behind the producer's watermark
(more out of order than its --max_delay) is a 'late' dead letter. From Kafka (on Flink), each
result is written once, as NAME-once-*.jsonl, and the run ends once every producer's replay has
ended and been processed (README: "Live on a durable log").

{
    options_help(
        "beam-tally monitor",
        (IOOptions, "input and output"),
        (MonitorOptions, "monitor"),
        (ConsoleOptions, "console"),
        (StreamOptions, "live (with --streaming)"),
        (FlinkJobOptions, "Flink (FlinkRunner)"),
    )
}

Beam options pass through unchanged, e.g. --runner=DirectRunner (the default), FlinkRunner or
PrismRunner, --direct_num_workers=2 --direct_running_mode=multi_processing."""


def build_monitor_pipeline(p: beam.Pipeline, options) -> dict[str, beam.PCollection]:
    """Wires the monitor job into ``p``; returns its outputs by name for tests to assert on."""
    io_opts = options.view_as(IOOptions)
    opts = options.view_as(MonitorOptions)

    source = options.view_as(StreamOptions).source
    if source:  # live: the producer's stream (its late lines arrive marked, as dead letters)
        marker = io_opts.output and end_marker(io_opts.output)
        lines = p | "ReadStream" >> live_source(options, "access", marker, "monitor")
        read_dead_letters = []
    else:
        # Ranges of a large file only when several workers can share them: with one, they cost
        # time (measured, 3.3M lines, with a shuffle then before the detector: 19.0 s against
        # 15.4 s without).
        split = SPLIT_BYTES if several_workers(options) else None
        read = p | "ReadAccessLogs" >> ReadAccessLogs(
            io_opts.input, io_opts.max_file_bytes, split_bytes=split
        )
        lines, read_dead_letters = read["lines"], [read[DEAD_LETTERS]]
    # Both consumers take event time from AccessRecord.timestamp: no per-record stamping.
    parsed = lines | "ParseAccessLines" >> ParseAccessLines(opts.format, event_time=False)
    records = parsed[RECORDS]
    computed = records | "ComputeTrafficStats" >> ComputeTrafficStats(
        opts.stats_window, opts.top, totals=True
    )
    stats, totals = computed["stats"], computed["totals"]
    detected = records | "DetectHighTraffic" >> DetectHighTraffic(
        opts.threshold, opts.alert_window, opts.max_delay
    )
    alerts = detected[ALERTS]
    dead_letters = (
        *read_dead_letters,
        parsed[DEAD_LETTERS],
        detected[LATE],
    ) | "AllDeadLetters" >> beam.Flatten()

    printed = {"stats.jsonl": stats, "alerts.jsonl": alerts}
    if io_opts.output:
        formats = {
            "stats.jsonl": stats_json,
            "alerts.jsonl": alert_json,
            "totals.jsonl": stats_json,
            "dead_letters.jsonl": dead_letter_json,
        }
        named = {
            "stats.jsonl": stats,
            "alerts.jsonl": alerts,
            "totals.jsonl": totals,
            "dead_letters.jsonl": dead_letters,
        }
        if is_kafka(source):  # a restore replays input: print and write each result once
            printed = named | "WriteOutputs" >> WriteJsonLinesOnce(io_opts.output, formats)
            tuple(printed.values()) | "MarkDrained" >> MarkDrained(end_marker(io_opts.output))
        else:
            named | "WriteOutputs" >> (
                WriteJsonLinesLive(
                    io_opts.output, formats, options.view_as(StreamOptions).roll_seconds
                )
                if source
                else WriteJsonLines(io_opts.output, formats=formats)
            )
    # Live, the console prints as windows and seconds complete, in event-time order already.
    # A batch run prints after the run, from its outputs (console.print_monitor_outputs): the
    # launcher's terminal is the console, and an engine's workers print out of order.
    shown = options.view_as(ConsoleOptions).console
    if source and shown == "all":
        printed["stats.jsonl"] | "PrintStats" >> WriteToConsole(console.format_stats)
    if source and shown in ("all", "alerts"):
        printed["alerts.jsonl"] | "PrintAlerts" >> WriteToConsole(console.format_alert)
    return {
        "stats": stats,
        "alerts": alerts,
        "totals": totals,
        "dead_letters": dead_letters,
        "records": records,
    }


def print_outputs(output: str, shown: str) -> None:
    """A batch run's console: its stats blocks (``--console all``) and alert lines (``all``,
    ``alerts``) read back from its outputs, in event-time order (``console.in_event_order``)."""
    if shown == "summary":
        return
    stats = metrics.read_output(output, "stats") if shown == "all" else ()
    alerts = metrics.read_output(output, "alerts")
    for text in console.in_event_order(map(stats_from_json, stats), map(alert_from_json, alerts)):
        sys.stdout.write(text + "\n")
    sys.stdout.flush()


def validate(options) -> None:
    opts = options.view_as(MonitorOptions)
    for flag in ("stats_window", "alert_window", "top"):
        if getattr(opts, flag) <= 0:
            raise UsageError(f"--{flag} must be a positive number of seconds or entries")
    if opts.max_delay < 0:
        raise UsageError("--max_delay must be 0 or more seconds")
    if opts.threshold < 0:
        raise UsageError("--threshold must be 0 or more requests per second")
    if check_source(options) is None:
        check_input_output(
            options,
            "'logs/access*.log'",
            "generate a sample with 'beam-tally generate access --out FILE'",
        )


def run(argv: list[str]) -> int:
    options = parse_pipeline_args(argv, HELP)
    validate(options)
    # A large file is read in ranges that workers share; per byte the monitor does twenty
    # times the tally's work, so a second worker pays sooner (3.3M lines, 227 MB: 14.5 s with
    # two against 16.9 s with one).
    prepare_runner(options, argv, split_bytes=SPLIT_BYTES, spread_bytes=MONITOR_SPREAD_BYTES)
    output = options.view_as(IOOptions).output
    shown = options.view_as(ConsoleOptions).console
    opts, source = options.view_as(MonitorOptions), options.view_as(StreamOptions).source
    params = {
        **{k: getattr(opts, k) for k in ("threshold", "stats_window", "alert_window")},
        **({"source": source} if source else {"input": options.view_as(IOOptions).input}),
    }
    if source:
        refresh = partial(report.refreshing, output, "monitor", params)
        _, seconds, ended, lines = run_live(
            options, output, build_monitor_pipeline, OUTPUTS, refresh
        )
        totals, reasons = metrics.live_monitor_counters(output, lines)
        bad_files = {}  # a live run keeps no per-file metrics (see metrics.live_*)
    else:
        result, seconds = run_pipeline(options, output, build_monitor_pipeline, OUTPUTS)
        totals = metrics.counters(result, METRICS_NAMESPACE)
        reasons = metrics.counters(result, metrics.DEAD_LETTER_NAMESPACE)
        ended = None
        bad_files = input_check.bad_files(result)
    with paused():
        report_line = report.report_line_later(output, "monitor", params, fork=not source)
        try:
            if not source:
                print_outputs(output, shown)
            outputs = metrics.monitor_outputs(output)
            print(
                console.format_monitor_summary(
                    totals, reasons, seconds, output, ended, outputs, bad_files
                )
            )
        except BaseException:
            report_line(cancel=True)
            raise
        print(report_line())
    if bad_files and not totals.get("records"):  # not one valid line: the wrong input?
        fmt = options.view_as(MonitorOptions).format
        print(f"beam-tally monitor: {input_check.wrong_input('monitor', bad_files, fmt)}",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0
