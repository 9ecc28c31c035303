"""The tally job: graph wiring (``build_tally_pipeline``) and the command (``run``).

ReadLogFiles -> TallyDocuments (TallyLargeDocuments, streamed, for files over 64 MiB) ->
UpdateGlobalTally -> sinks:
``tallies.jsonl``, ``global_tally.jsonl``, ``global_tally_final.json``, ``dead_letters.jsonl``
under ``--output``, and the console; then ``report.html`` from those files (``beam_tally.report``).
"""

from __future__ import annotations

import sys
from functools import partial

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_tally import console, input_check, metrics, report
from beam_tally.io.files import (
    LARGE,
    ReadLogFiles,
    TallyLargeDocuments,
    WriteJsonLines,
    WriteToConsole,
)
from beam_tally.io.kafka import MarkDrained, WriteJsonLinesOnce, is_kafka
from beam_tally.io.stream import WriteJsonLinesLive, end_marker, live_source, per_document_windows
from beam_tally.options import (
    ConsoleOptions,
    IOOptions,
    StreamOptions,
    TallyOptions,
    UsageError,
    check_input_output,
    check_source,
    options_help,
    parse_pipeline_args,
)
from beam_tally.runtime import prepare_runner, run_live, run_pipeline
from transforms.records import (
    dead_letter_json,
    file_tally_json,
    global_tally_json,
)
from transforms.tally import (
    DEAD_LETTERS,
    FINAL,
    METRICS_NAMESPACE,
    TALLIES,
    UPDATES,
    TallyDocuments,
    UpdateGlobalTally,
)

OUTPUTS = (
    "tallies.jsonl",
    "global_tally.jsonl",
    "global_tally_final.json",
    "dead_letters.jsonl",
)  # under --output; an earlier run's are replaced

HELP = f"""usage: beam-tally tally --input GLOB --output DIR [options] [Beam options]
       beam-tally tally --streaming --source HOST:PORT --output DIR [options]

Tallies logs per email in every logs_xx.json file ({{"logs":[{{"id","email","message"}}, ...]}})
that --input names, and keeps a global tally, printed after each file. Writes tallies.jsonl,
global_tally.jsonl, global_tally_final.json and dead_letters.jsonl under DIR, and report.html,
their charts (a live run rewrites it as it goes, and the open page reloads itself).

Live: --streaming --source HOST:PORT reads the documents 'beam-tally produce tally' serves and
writes tallies-*.jsonl, global_tally-*.jsonl and dead_letters-*.jsonl as it goes (a new file of
each every --roll_seconds), until the stream ends, --stop_after seconds pass, or Ctrl-C.

{
    options_help(
        "beam-tally tally",
        (IOOptions, "input and output"),
        (TallyOptions, "tally"),
        (ConsoleOptions, "console"),
        (StreamOptions, "live (with --streaming)"),
    )
}

Beam options pass through unchanged, e.g. --runner=DirectRunner (the default), FlinkRunner or
PrismRunner, --direct_num_workers=2 --direct_running_mode=multi_processing."""


def _final_json(final) -> str:
    Metrics.gauge(METRICS_NAMESPACE, "distinct_emails").set(len(final.tally))
    return global_tally_json(final)


def build_tally_pipeline(p: beam.Pipeline, options) -> dict[str, beam.PCollection]:
    """Wires the tally job into ``p``; returns its outputs by name for tests to assert on."""
    io_opts = options.view_as(IOOptions)
    tally_opts = options.view_as(TallyOptions)
    output = io_opts.output

    source = options.view_as(StreamOptions).source
    if source:  # live: documents from the producer, each in its own tiny event-time window
        files = (
            p
            | "ReadStream"
            >> live_source(options, "tally", io_opts.output and end_marker(io_opts.output), "tally")
            | "PerDocument" >> (per_document_windows())
        )
        read_dead_letters = []
    else:
        read = p | "ReadLogFiles" >> ReadLogFiles(io_opts.input, io_opts.max_file_bytes)
        files, read_dead_letters = read["files"], [read[DEAD_LETTERS]]
    counted = files | "TallyDocuments" >> TallyDocuments()
    tallies = counted[TALLIES]
    if not source:
        streamed = read[LARGE] | "TallyLargeDocuments" >> TallyLargeDocuments(
            io_opts.max_file_bytes
        )
        read_dead_letters.append(streamed[DEAD_LETTERS])
        # A stage boundary: the FnApiRunner fuses the reading and counting with the stateful
        # UpdateGlobalTally into one stage otherwise, and runs a stateful stage on one worker.
        tallies = (tallies, streamed[TALLIES]) | "AllTallies" >> beam.Flatten()
        tallies = tallies | "GatherTallies" >> beam.Reshuffle()
    global_tally = tallies | "UpdateGlobalTally" >> UpdateGlobalTally()
    updates, final = global_tally[UPDATES], global_tally[FINAL]
    dead_letters = (*read_dead_letters, counted[DEAD_LETTERS]) | "AllDeadLetters" >> beam.Flatten()

    printed = updates
    if output:
        named = {
            "tallies.jsonl": tallies,
            "global_tally.jsonl": updates,
            "dead_letters.jsonl": dead_letters,
        }
        formats = {
            "tallies.jsonl": file_tally_json,
            "global_tally.jsonl": global_tally_json,
            "dead_letters.jsonl": dead_letter_json,
        }
        if is_kafka(source):  # a restore replays input: print and write each result once
            written = named | "WriteOutputs" >> WriteJsonLinesOnce(output, formats)
            tuple(written.values()) | "MarkDrained" >> MarkDrained(end_marker(output))
            printed = written["global_tally.jsonl"]
        elif source:  # written as the run goes; the final tally is the last update
            named | "WriteOutputs" >> WriteJsonLinesLive(
                output, formats, options.view_as(StreamOptions).roll_seconds
            )
        else:
            named["global_tally_final.json"] = final
            formats["global_tally_final.json"] = _final_json
            named | "WriteOutputs" >> WriteJsonLines(
                output, {"global_tally_final.json": global_tally_json(None)}, formats
            )
    if options.view_as(ConsoleOptions).console == "all":
        # One key holds the global tally, so its updates print in the order they are applied.
        printed | "PrintUpdates" >> WriteToConsole(
            partial(console.format_update, limit=tally_opts.print_limit)
        )
    return {
        "tallies": tallies,
        "global_tally": updates,
        "final": final,
        "dead_letters": dead_letters,
    }


def validate(options) -> None:
    if options.view_as(TallyOptions).print_limit < 0:
        raise UsageError("--print_limit must be 0 or more")
    if options.view_as(ConsoleOptions).console == "alerts":
        raise UsageError("the tally job has no alerts: --console all or --console summary")
    if check_source(options) is None:
        check_input_output(
            options, "'logs/*.json'", "generate samples with 'beam-tally generate tally --out DIR'"
        )


def run(argv: list[str]) -> int:
    options = parse_pipeline_args(argv, HELP)
    validate(options)
    prepare_runner(options, argv)
    output, source = options.view_as(IOOptions).output, options.view_as(StreamOptions).source
    params = {"source": source} if source else {"input": options.view_as(IOOptions).input}
    if source:
        refresh = partial(report.refreshing, output, "tally", params)
        _, seconds, ended, _ = run_live(options, output, build_tally_pipeline, OUTPUTS, refresh)
        totals, reasons, emails = metrics.live_tally_counters(output)
        bad_files = {}  # a live run keeps no per-file metrics (see metrics.live_*)
    else:
        result, seconds = run_pipeline(options, output, build_tally_pipeline, OUTPUTS)
        totals = metrics.counters(result, METRICS_NAMESPACE)
        reasons = metrics.counters(result, metrics.DEAD_LETTER_NAMESPACE)
        emails = metrics.gauge(result, METRICS_NAMESPACE, "distinct_emails")
        ended = None
        bad_files = input_check.bad_files(result)
    print(console.format_tally_summary(totals, reasons, seconds, emails, output, ended, bad_files))
    print(report.report_line(output, "tally", params))
    if bad_files and not totals.get("logs"):  # not one valid log: the wrong input?
        print(f"beam-tally tally: {input_check.wrong_input('tally', bad_files)}", file=sys.stderr)
        return 1
    return 0
