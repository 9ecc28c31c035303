"""The monitor job: graph wiring (``build_monitor_pipeline``) and the command (``run``).

ReadAccessLogs -> ParseAccessLines -> ComputeTrafficStats (every ``--stats_window`` seconds of
event time) and DetectHighTraffic (the ``--alert_window`` average against ``--threshold``) ->
``stats.jsonl``, ``alerts.jsonl``, ``dead_letters.jsonl`` under ``--output``, and the console.
"""

from __future__ import annotations

import apache_beam as beam

from beam_tally import console, metrics
from beam_tally.engines import configure_runner
from beam_tally.io import ReadAccessLogs, WriteJsonLines, WriteToConsole
from beam_tally.io.kafka import WriteJsonLinesOnce, is_kafka
from beam_tally.io_stream import WriteJsonLinesLive, end_marker, live_source
from beam_tally.options import (
    IOOptions,
    MonitorOptions,
    StreamOptions,
    UsageError,
    check_input_output,
    check_source,
    parse_pipeline_args,
)
from beam_tally.records import alert_json, dead_letter_json, stats_json
from beam_tally.runtime import run_live, run_pipeline
from transforms.tally import DEAD_LETTERS, METRICS_NAMESPACE
from transforms.traffic import (
    ALERTS,
    LATE,
    RECORDS,
    ComputeTrafficStats,
    DetectHighTraffic,
    ParseAccessLines,
)

OUTPUTS = (
    "stats.jsonl",
    "alerts.jsonl",
    "dead_letters.jsonl",
)  # under --output; an earlier run's are replaced

HELP = """usage: beam-tally monitor --input GLOB --output DIR [--format auto|csv|clf]
          [--threshold 10] [--stats_window 10] [--alert_window 120] [--max_delay 5] [--top 5]
          [Beam options]
       beam-tally monitor --streaming --source HOST:PORT --output DIR [--stop_after S] ...
       beam-tally monitor --streaming --source kafka://HOST:PORT/TOPIC --runner=FlinkRunner
          --output DIR [--consumer_group G] [--checkpointing_interval MS] ...

Reads HTTP access logs (the exercise's CSV, or Common/Combined Log Format as nginx and Apache
write it), prints stats for every --stats_window seconds of event time and a high-traffic alert
when the --alert_window average passes --threshold requests per second, then its recovery.
Writes stats.jsonl, alerts.jsonl and dead_letters.jsonl under DIR.

Live: --streaming --source HOST:PORT reads what 'beam-tally produce access' serves, prints as
the watermark passes, and writes stats-*.jsonl, alerts-*.jsonl and dead_letters-*.jsonl as it
goes, until the stream ends, --stop_after seconds pass, or Ctrl-C. A line that arrives behind
the producer's watermark (more out of order than its --max_delay) is a 'late' dead letter.
From Kafka (on Flink), each result is written once as NAME-once-*.jsonl, and the run ends once
every producer's replay has ended and been processed (README: "Kafka")."""


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
        read = p | "ReadAccessLogs" >> ReadAccessLogs(io_opts.input, io_opts.max_file_bytes)
        lines, read_dead_letters = read["lines"], [read[DEAD_LETTERS]]
    # Both consumers take event time from AccessRecord.timestamp: no per-record stamping.
    parsed = lines | "ParseAccessLines" >> ParseAccessLines(opts.format, event_time=False)
    records = parsed[RECORDS]
    stats = records | "ComputeTrafficStats" >> ComputeTrafficStats(opts.stats_window, opts.top)
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
            "dead_letters.jsonl": dead_letter_json,
        }
        named = {
            "stats.jsonl": stats,
            "alerts.jsonl": alerts,
            "dead_letters.jsonl": dead_letters,
        }
        if is_kafka(source):  # a restore replays input: print and write each result once
            printed = named | "WriteOutputs" >> WriteJsonLinesOnce(io_opts.output, formats)
        else:
            named | "WriteOutputs" >> (
                WriteJsonLinesLive(io_opts.output, formats)
                if source
                else WriteJsonLines(io_opts.output, formats=formats)
            )
    printed["stats.jsonl"] | "PrintStats" >> WriteToConsole(console.format_stats)
    printed["alerts.jsonl"] | "PrintAlerts" >> WriteToConsole(console.format_alert)
    return {"stats": stats, "alerts": alerts, "dead_letters": dead_letters, "records": records}


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
    configure_runner(options, argv)
    output = options.view_as(IOOptions).output
    if options.view_as(StreamOptions).source:
        _, seconds, ended = run_live(options, output, build_monitor_pipeline, OUTPUTS)
        totals, reasons = metrics.live_monitor_counters(output)
    else:
        result, seconds = run_pipeline(options, output, build_monitor_pipeline, OUTPUTS)
        totals = metrics.counters(result, METRICS_NAMESPACE)
        reasons = metrics.counters(result, metrics.DEAD_LETTER_NAMESPACE)
        ended = None
    print(console.format_monitor_summary(totals, reasons, seconds, output, ended))
    return 0
