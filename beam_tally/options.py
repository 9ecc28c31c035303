"""Command-line options as Beam ``PipelineOptions``, and strict parsing with one-line errors.

Beam adds every ``PipelineOptions`` subclass to one parser, so each flag is defined exactly once:
``--input``/``--output`` in ``IOOptions``, job-specific flags in their job's class. Beam itself
drops unknown flags with a warning; ``parse_pipeline_args`` rejects them instead, because a
mistyped flag silently ignored is a wrong result.
"""

from __future__ import annotations

import os

from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    StandardOptions,
    _BeamArgumentParser,
)

from beam_tally.errors import HelpRequested, UsageError, UsageParser, flags_help
from beam_tally.io.files import matching_files
from beam_tally.io.paths import input_pattern
from beam_tally.io.sources import DEFAULT_MAX_FILE_BYTES

DEFAULT_RUNNER = "DirectRunner"
__all__ = [
    "ConsoleOptions",
    "FlinkJobOptions",
    "IOOptions",
    "MonitorOptions",
    "StreamOptions",
    "TallyOptions",
    "UsageError",
    "parse_pipeline_args",
]


class IOOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--input",
            metavar="GLOB",
            help="files to read: a file, a folder (its files) or a glob (quote it)",
        )
        parser.add_argument(
            "--output", metavar="DIR", help="folder for the output files (created if missing)"
        )
        parser.add_argument(
            "--max_file_bytes",
            type=int,
            default=DEFAULT_MAX_FILE_BYTES,
            metavar="N",
            help="bytes of content (decompressed) read from one file at most; the rest of a "
            "larger file is a dead letter (default: 1 GiB)",
        )


class TallyOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--print_limit",
            type=int,
            default=20,
            metavar="N",
            help="entries of each tally printed on the console",
        )


class MonitorOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--format",
            default="auto",
            choices=["auto", "csv", "clf"],
            help="access-log format: csv (the exercise's), clf (Common/Combined Log Format), or "
            "auto to tell them apart per file",
        )
        parser.add_argument(
            "--threshold",
            type=float,
            default=10.0,
            metavar="R",
            help="alert when the --alert_window average is above R requests per second",
        )
        parser.add_argument(
            "--stats_window",
            type=int,
            default=10,
            metavar="S",
            help="seconds of event time per stats block",
        )
        parser.add_argument(
            "--alert_window",
            type=int,
            default=120,
            metavar="S",
            help="seconds of event time the alert's average spans",
        )
        parser.add_argument(
            "--max_delay",
            type=int,
            default=5,
            metavar="S",
            help="seconds the alert evaluation trails the newest line (lines later than that "
            "are 'late' dead letters in a live run)",
        )
        parser.add_argument(
            "--top", type=int, default=5, metavar="N", help="entries of each top list"
        )


CONSOLE_CHOICES = ("all", "alerts", "summary")
PROGRESS_CHOICES = ("auto", "on", "off")


class ConsoleOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--console",
            default="all",
            choices=CONSOLE_CHOICES,
            help="what the console shows besides the closing summary: all (every stats block "
            "or tally update, and the alerts), alerts (the alert and recovery lines only), "
            "summary (nothing else)",
        )
        parser.add_argument(
            "--progress",
            default="auto",
            choices=PROGRESS_CHOICES,
            help="a progress line on stderr during a batch run (files and bytes read, "
            "lines per second): auto shows it when stdout and stderr are terminals",
        )


class StreamOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--source",
            metavar="HOST:PORT|kafka://HOST:PORT/TOPIC",
            help="a 'beam-tally produce' stream (HOST:PORT), or a Kafka topic "
            "(kafka://HOST:PORT/TOPIC), to read instead of --input (with --streaming)",
        )
        parser.add_argument(
            "--consumer_group",
            metavar="G",
            help="Kafka consumer group of a kafka:// --source; given, its offsets are committed "
            "at each Flink checkpoint (default: a new group per run, nothing committed)",
        )
        parser.add_argument(
            "--producers",
            type=int,
            default=1,
            metavar="N",
            help="Kafka: how many producers write the topic of a kafka:// --source; the "
            "watermark waits until each has written (default: 1)",
        )
        parser.add_argument(
            "--stop_after",
            type=float,
            metavar="S",
            help="end a live run after S seconds (default: when the stream ends)",
        )
        parser.add_argument(
            "--connect_timeout",
            type=float,
            default=30.0,
            metavar="S",
            help="seconds a live run waits for the --source producer to answer",
        )
        parser.add_argument(
            "--roll_seconds",
            type=float,
            default=60.0,
            metavar="S",
            help="a live run starts a new file of each output every S seconds of wall time",
        )


class FlinkJobOptions(PipelineOptions):
    """Flags of Beam's Java FlinkPipelineOptions (checkpoints, restore, bundles), which the job
    server reads: declared here because unknown flags are refused before it is asked."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--checkpointing_interval",
            type=int,
            help="Flink: milliseconds between checkpoints (off by default). A kafka:// "
            "--source then commits its offsets at each completed checkpoint.",
        )
        parser.add_argument(
            "--state_backend", help="Flink: 'filesystem' or 'rocksdb' for the checkpoints."
        )
        parser.add_argument(
            "--state_backend_storage_path",
            help="Flink: where the checkpoints go, e.g. file:///tmp/checkpoints.",
        )
        parser.add_argument(
            "--externalized_checkpoints_enabled",
            action="store_true",
            default=None,
            help="Flink: keep checkpoints outside the job, for a restart with --savepoint_path.",
        )
        parser.add_argument(
            "--retain_externalized_checkpoints_on_cancellation",
            action="store_true",
            default=None,
            help="Flink: keep the externalized checkpoints when the job is cancelled.",
        )
        parser.add_argument(
            "--savepoint_path",
            help="Flink: a savepoint or retained checkpoint (its chk-N folder) to restore.",
        )
        parser.add_argument(
            "--flink_conf_dir",
            help="Flink: a folder with a Flink configuration for the job (an embedded "
            "MiniCluster's restore from --savepoint_path is set through one).",
        )
        parser.add_argument(
            "--finish_bundle_before_checkpointing",
            action="store_true",
            default=None,
            help="Flink: finish each bundle before a checkpoint (set whenever checkpoints "
            "are on: a Python stage's in-flight bundle is otherwise not in the checkpoint).",
        )
        parser.add_argument(
            "--max_bundle_time_mills",
            type=int,
            help="Flink: a bundle closes after this many milliseconds at most (Beam's default "
            "1000; a Kafka run sets 100: the watermark passes a Python stage only as its "
            "bundle ends, so this bounds the latency of each stage).",
        )


class _StrictParser(UsageParser, _BeamArgumentParser):
    """Beam's parser (ValueProvider arguments), with ``UsageError`` for errors."""


def _all_options_parser() -> _StrictParser:
    parser = _StrictParser(allow_abbrev=False, add_help=False)
    seen = {}
    for cls in PipelineOptions.__subclasses__():
        seen.setdefault(str(cls), cls)
    for cls in seen.values():
        cls._add_argparse_args(parser)
    return parser


def options_help(title: str, *classes: tuple[type[PipelineOptions], str]) -> str:
    """The flags of each ``(options class, heading)``, under its heading, with meaning and
    default, for a job's ``--help``."""
    parser = _StrictParser(prog=title, allow_abbrev=False, add_help=False)
    for cls, heading in classes:
        cls._add_argparse_args(parser.add_argument_group(heading))
    return flags_help(parser)


def parse_pipeline_args(argv: list[str], help_text: str) -> PipelineOptions:
    """Parse ``argv`` into ``PipelineOptions``; unknown flags and stray words are usage errors.

    ``--runner`` defaults to the DirectRunner (with no runner, Beam would try to download and
    start Prism; a batch run then skips the DirectRunner's own Prism attempt, see
    ``runtime.batch_runner``).
    """
    if any(arg in ("-h", "--help") for arg in argv):
        raise HelpRequested(help_text)
    _, unknown = _all_options_parser().parse_known_args(argv)
    strays = [arg for arg in unknown if not arg.startswith("-")]
    flags = [arg for arg in unknown if arg.startswith("-")]
    if flags:
        raise UsageError(f"unknown option {flags[0].split('=')[0]}")
    if strays:
        raise UsageError(
            f"unexpected argument {strays[0]!r}: quote the --input glob so the shell does not "
            "expand it"
        )
    options = PipelineOptions(argv)
    if options.view_as(StandardOptions).runner is None:
        options.view_as(StandardOptions).runner = DEFAULT_RUNNER
    direct = options.view_as(DirectOptions)
    if direct.direct_running_mode == "multi_threading" and direct.direct_num_workers != 1:
        # Reproduced: each worker thread caches the jobs' keyed state, and a timer firing on one
        # read a stale copy, so the monitor printed every alert twice (its metrics said once).
        raise UsageError(
            "--direct_running_mode=multi_threading with several workers gives wrong results "
            "for stateful steps on Beam 2.77: use --direct_running_mode=multi_processing"
        )
    return options


def check_source(options) -> str | None:
    """The ``--source`` of a streaming run (None for a batch run over ``--input``); a source
    without ``--streaming``, or both ``--source`` and ``--input``, is a usage error."""
    stream = options.view_as(StreamOptions)
    streaming = options.view_as(StandardOptions).streaming
    io_opts = options.view_as(IOOptions)
    if stream.stop_after is not None and stream.stop_after <= 0:
        raise UsageError("--stop_after must be a positive number of seconds")
    if stream.connect_timeout <= 0:
        raise UsageError("--connect_timeout must be a positive number of seconds")
    if not 0 < stream.roll_seconds < float("inf"):
        raise UsageError("--roll_seconds must be a positive number of seconds")
    if not stream.source:
        if streaming:
            raise UsageError(
                "--streaming reads a live stream: add --source HOST:PORT of a "
                "'beam-tally produce' (or drop --streaming to read --input files)"
            )
        return None
    if not streaming:
        raise UsageError("--source reads a live stream: add --streaming")
    if io_opts.input:
        raise UsageError("give --input (batch) or --streaming --source (live), not both")
    _check_source_runner(options)
    check_output(io_opts)
    return stream.source


def _check_source_runner(options) -> None:
    """A ``kafka://`` source is read on Flink only, a ``HOST:PORT`` one on the DirectRunner."""
    stream = options.view_as(StreamOptions)
    runner = options.view_as(StandardOptions).runner
    name = runner.rsplit(".", 1)[-1] if isinstance(runner, str) else None
    if stream.source.startswith("kafka://"):
        from beam_tally.io.kafka import parse_address

        parse_address(stream.source)
        if stream.producers < 1:
            raise UsageError("--producers must be 1 or more: how many producers write the topic")
        if stream.producers > 1 and options.view_as(FlinkJobOptions).savepoint_path:
            raise UsageError(
                "--savepoint_path with --producers above 1: a restore does not know which "
                "producers had ended, so it could make a slower one's lines late; resume a "
                "one-producer topic, or rerun from the start"
            )
        if "://" in (options.view_as(IOOptions).output or ""):
            raise UsageError(
                "a kafka:// run writes its outputs once each, by hard links: give a local "
                "--output folder"
            )
        if name not in ("FlinkRunner", "flink"):
            raise UsageError(
                "a kafka:// --source is read by Beam's Java KafkaIO, which runs here on "
                f"--runner=FlinkRunner only, not --runner={runner}"
            )
        return
    if stream.consumer_group or stream.producers != 1:
        raise UsageError("--consumer_group and --producers are for a kafka:// --source")
    if name is not None and name not in ("DirectRunner", "direct"):
        raise UsageError(
            f"--source HOST:PORT is read by the DirectRunner only (its TestStream service), not "
            f"by --runner={runner}: drop --runner, or produce into Kafka and read "
            "--source kafka://HOST:PORT/TOPIC"
        )
    if ":" not in stream.source:
        raise UsageError("--source needs HOST:PORT, e.g. --source 127.0.0.1:50051")


def absolute_pattern(pattern: str) -> str:
    """``paths.input_pattern``: absolute, literal when it names a file, a folder its files."""
    return input_pattern(pattern)


def check_input_output(options, input_example: str, generate_hint: str) -> None:
    """The checks every job makes of ``--input`` and ``--output``: both given, the input made
    absolute and matching at least one file, the output not a file."""
    io_opts = options.view_as(IOOptions)
    require(io_opts.input, "--input", f"the files to read, e.g. --input {input_example}")
    if io_opts.max_file_bytes <= 0:
        raise UsageError("--max_file_bytes must be a positive number of bytes")
    check_output(io_opts)
    io_opts.input = absolute_pattern(io_opts.input)
    if not matching_files(io_opts.input):
        raise UsageError(
            f"--input {io_opts.input!r} matches no file: check the path, or {generate_hint}"
        )


def check_output(io_opts: IOOptions) -> None:
    """``--output`` given, and not a file (batch and live runs alike)."""
    require(io_opts.output, "--output", "a directory for the outputs, e.g. --output out")
    if os.path.isfile(io_opts.output):
        raise UsageError(f"--output {io_opts.output!r} is a file: give a directory")


def require(value, flag: str, what: str):
    if value is None or value == "":
        raise UsageError(f"{flag} is required: {what}")
    return value
