"""Live IO over Apache Kafka: ``kafka://HOST:PORT/TOPIC`` addresses, the producer that writes a
replay into a topic, and the consumer's read (Beam's cross-language KafkaIO).

The record format, shared by both sides:

- a line (``AccessLine``) or a document (``SourceFile``): key = its source file's path, so a
  file's records stay in one partition and keep their order; value = the record's own coder
  (its coder in Beam's registry); record timestamp = its event time in milliseconds;
- a watermark marker: key = ``MARKER_PREFIX`` + the producer's id, empty value, timestamp = the
  producer's watermark; written into every partition now and then, and a last time with the
  value ``end`` when the replay is done. The Java read (``EventTimeKafkaRead.java``) keeps each
  partition's watermark at the smallest of its producers' markers; the consumer drops markers.

KafkaIO's own cross-language timestamp policies move an idle partition's watermark to the wall
clock and have no delay, which would make a replayed hour late: hence the markers.
"""

from __future__ import annotations

import math
import os
import time
import typing
import uuid
from urllib.parse import urlsplit

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms import userstate, window
from apache_beam.transforms.external import ExternalTransform, NamedTupleBasedPayloadBuilder

from beam_tally.errors import UsageError

SCHEME = "kafka://"
URN = "beam:transform:beam-tally:kafka_read_event_time:v1"
MARKER_PREFIX = b"\x00beam-tally-watermark:"
END = b"end"
# A replay's record timestamps are its lines' event times, maybe years old: Kafka's time-based
# retention would delete them at once, and its time-based segment roll would start a segment
# per batch. The topics the producer creates keep every record (README: "Live on a durable
# log" says how to set an existing topic).
MAX_RECORD_BYTES = 8 << 20  # a tally document may be ~4 MiB (as over gRPC); Kafka's default: 1 MB
TOPIC_CONFIG = {
    "retention.ms": "-1",
    "segment.ms": str(2**63 - 1),
    "max.message.bytes": str(MAX_RECORD_BYTES),
}
MARKER_EVERY = 0.1  # seconds of wall time between two rounds of markers, at most one round


def is_kafka(source: str | None) -> bool:
    return bool(source) and source.startswith(SCHEME)


def parse_address(address: str) -> tuple[str, str]:
    """``kafka://HOST:PORT/TOPIC`` -> ``("HOST:PORT", "TOPIC")``; ``UsageError`` otherwise."""
    parts = urlsplit(address)
    topic = parts.path.strip("/")
    if parts.scheme != "kafka" or not parts.netloc or ":" not in parts.netloc or not topic:
        raise UsageError(
            f"{address!r}: give kafka://HOST:PORT/TOPIC, e.g. kafka://127.0.0.1:9092/access"
        )
    if "/" in topic:
        raise UsageError(f"{address!r}: a topic name has no '/'")
    return parts.netloc, topic


def _need_client() -> None:
    """confluent-kafka is an extra (``beam-tally[kafka]``): one line if it is missing."""
    try:
        import confluent_kafka  # noqa: F401
    except ImportError as err:
        raise UsageError(
            "kafka:// needs the Kafka client: pip install 'beam-tally[kafka]' (or confluent-kafka)"
        ) from err


def wait_for_broker(bootstrap: str, timeout: float, topic: str | None = None) -> None:
    """Waits up to ``timeout`` seconds for a broker at ``bootstrap`` (and for ``topic`` on it,
    which a producer creates); ``UsageError`` if none."""
    _need_client()
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    deadline = time.monotonic() + timeout
    broker = False
    while True:
        try:
            metadata = admin.list_topics(timeout=min(2.0, timeout))
            broker = bool(metadata.brokers)
            if broker and (topic is None or topic in metadata.topics):
                return
        except KafkaException:
            pass
        if time.monotonic() >= deadline:
            if broker:
                raise UsageError(
                    f"topic {topic!r} does not exist at {bootstrap} after {timeout:g} s: "
                    f"'beam-tally produce ... --to kafka://{bootstrap}/{topic}' creates it"
                )
            raise UsageError(
                f"no Kafka broker answers at {bootstrap} after {timeout:g} s: start one with "
                "'scripts/kafka.sh start'"
            )
        time.sleep(0.5)


# The consumer ------------------------------------------------------------------------------


# Functional form: Beam infers the payload's schema from real types, not from the strings
# that this module's postponed annotations would make of a class body's fields.
_ReadConfig = typing.NamedTuple(  # noqa: UP014
    "_ReadConfig",
    [
        ("consumer_config", typing.Mapping[str, str]),
        ("topics", list[str]),
        ("commit_offset_in_finalize", bool),
        ("producers", int),
    ],
)


def expansion_service():
    """The expansion service of beam-tally's Kafka read, started by Beam for the expansion
    (``engines.kafka_io``); its Java transforms run inside Flink (``EMBEDDED``)."""
    from apache_beam.transforms.external import JavaJarExpansionService

    from beam_tally import engines

    jar = engines.kafka_io() / "expansion-service.jar"
    return JavaJarExpansionService(
        str(jar),
        extra_args=[
            "{{PORT}}",
            "--defaultEnvironmentType=EMBEDDED",
            "--experiments=use_deprecated_read",
        ],
    )


class _DecodeFn(beam.DoFn):
    """Kafka's ``(key, value)`` -> the element the producer wrote (markers dropped)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def setup(self):
        from beam_tally.io.stream import KINDS

        self.coder = beam.coders.registry.get_coder(KINDS[self.kind])

    def process(self, record):
        key, value = record
        if key is not None and key.startswith(MARKER_PREFIX):
            return
        try:
            yield self.coder.decode(value)
        except Exception as err:  # not what 'produce --to' writes for this job: a dead letter
            yield self._dead_letter(key, f"undecodable Kafka record for {self.kind}: {err!r}")

    def _dead_letter(self, key, reason: str):
        from transforms.records import STREAM_ERROR, STREAM_ERROR_PREFIX, AccessLine, SourceFile

        source = "kafka:" + (key or b"").decode("utf-8", "backslashreplace")
        if self.kind == "access":
            return AccessLine(source, 0, reason[:500], STREAM_ERROR)
        return SourceFile(source, STREAM_ERROR_PREFIX + reason[:500].encode("utf-8"))


class _MarkEndFn(beam.DoFn):
    """Writes ``marker`` once its input's watermark passes the end of time."""

    SEEN = userstate.ReadModifyWriteStateSpec("seen", beam.coders.BooleanCoder())
    END_OF_TIME = userstate.TimerSpec("end", userstate.TimeDomain.WATERMARK)

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def process(
        self,
        element,
        seen=beam.DoFn.StateParam(SEEN),
        end=beam.DoFn.TimerParam(END_OF_TIME),
    ):
        if not seen.read():
            seen.write(True)
            end.set(window.GlobalWindow().max_timestamp())

    @userstate.on_timer(END_OF_TIME)
    def ended(self):
        with FileSystems.create(self.marker) as handle:
            handle.write(b"")


class MarkDrained(beam.PTransform):
    """A tuple of PCollections -> ``marker`` written once the watermark of every one of them
    has passed the end of time: everything they carry has been processed. Fed with a Kafka
    run's written outputs, that happens after every producer wrote its end marker and every
    result was written (a topic has no end of its own)."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker

    def expand(self, pcolls):
        pcolls = list(pcolls)
        # One element that is always there, for the timer to be set even if nothing else is.
        keyed = [pcolls[0].pipeline | "Always" >> beam.Create([(b"", b"")])]
        for i, pcoll in enumerate(pcolls):
            keyed.append(
                pcoll
                | f"Key{i}" >> beam.Map(lambda _: (b"", b"")).with_output_types(tuple[bytes, bytes])
                | f"Global{i}" >> beam.WindowInto(window.GlobalWindows())
            )
        return keyed | "All" >> beam.Flatten() | "MarkTheEnd" >> beam.ParDo(_MarkEndFn(self.marker))


class ReadKafka(beam.PTransform):
    """``PBegin`` -> the elements producers wrote into ``kafka://HOST:PORT/TOPIC``
    (``AccessLine`` for ``access``, ``SourceFile`` for ``tally``), timestamped with their event
    time, under the producers' watermark (at the end of time once every producer has written
    its end marker). With ``commit``, offsets are committed for ``group`` when Flink completes
    a checkpoint.

    Args:
      address: ``kafka://HOST:PORT/TOPIC``.
      kind: ``access`` or ``tally``.
      group: the Kafka consumer group.
      commit: commit the offsets read at each completed checkpoint (needs checkpointing).
      producers: how many producers write the topic: a partition's watermark stays at the
        start of time until each has written a marker into it, so the first producer's
        watermark cannot make the lines of one that starts a moment later late.
    """

    def __init__(
        self,
        address: str,
        kind: str,
        group: str,
        commit: bool = False,
        producers: int = 1,
    ) -> None:
        super().__init__()
        self.commit = commit
        self.producers = producers
        self.bootstrap, self.topic = parse_address(address)
        self.kind = kind
        self.group = group

    def expand(self, pbegin):
        from beam_tally.io.stream import KINDS

        config = {
            "bootstrap.servers": self.bootstrap,
            "group.id": self.group,
            # A new group reads the topic from its start; a known one from its commits.
            "auto.offset.reset": "earliest",
        }
        records = pbegin | "KafkaIO" >> ExternalTransform(
            URN,
            NamedTupleBasedPayloadBuilder(
                _ReadConfig(config, [self.topic], self.commit, self.producers)
            ),
            expansion_service(),
        )
        return records | "Decode" >> beam.ParDo(_DecodeFn(self.kind)).with_output_types(
            KINDS[self.kind]
        )


# The producer ------------------------------------------------------------------------------


class KafkaWriter:
    """Writes one replay into a topic: records keyed by source file, watermark markers into
    every partition. Idempotent producer, ``acks=all``: a record the broker did not confirm is
    sent again (while the broker is away, up to ``timeout`` seconds) and never twice."""

    def __init__(self, address: str, kind: str, partitions: int | None, timeout: float) -> None:
        _need_client()
        from confluent_kafka import Producer

        from beam_tally.io.stream import KINDS

        self.bootstrap, self.topic = parse_address(address)
        self.coder = beam.coders.registry.get_coder(KINDS[kind])
        self.id = uuid.uuid4().hex[:12]
        self.marker_key = MARKER_PREFIX + self.id.encode()
        self.failures: list[str] = []
        wait_for_broker(self.bootstrap, timeout)
        self.partitions = self._ensure_topic(partitions)
        self.producer = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "message.timeout.ms": int(timeout * 1000),
                "message.max.bytes": MAX_RECORD_BYTES,
                "log_level": 3,
            }
        )
        self.last_marker = 0.0
        self.watermark: float | None = None

    def _ensure_topic(self, partitions: int | None) -> int:
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        topic = admin.list_topics(self.topic, timeout=10).topics.get(self.topic)
        if topic is None or topic.error is not None:
            new = NewTopic(self.topic, partitions or 1, 1, config=dict(TOPIC_CONFIG))
            future = admin.create_topics([new])[self.topic]
            try:
                future.result(timeout=30)
            except KafkaException as err:
                if err.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
            for _ in range(50):  # until its metadata lists the partitions
                topic = admin.list_topics(self.topic, timeout=10).topics.get(self.topic)
                if topic is not None and topic.error is None and topic.partitions:
                    break
                time.sleep(0.1)
        if topic is None or topic.error is not None or not topic.partitions:
            raise UsageError(f"topic {self.topic!r} at {self.bootstrap} lists no partitions")
        count = len(topic.partitions)
        if partitions and count != partitions:
            raise UsageError(
                f"topic {self.topic!r} exists with {count} partitions, not --partitions "
                f"{partitions}: drop --partitions or use another topic"
            )
        self.existing = self._records_held(list(topic.partitions))
        return count

    def _records_held(self, partitions: list[int]) -> int:
        """How many records the topic holds already (another producer's, or an earlier
        replay's)."""
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        consumer = Consumer(
            {"bootstrap.servers": self.bootstrap, "group.id": f"beam-tally-probe-{self.id}"}
        )
        try:
            for _ in range(40):  # a topic just made may not have its leader yet
                try:
                    return sum(
                        max(0, high - low)
                        for low, high in (
                            consumer.get_watermark_offsets(
                                TopicPartition(self.topic, partition), timeout=10
                            )
                            for partition in partitions
                        )
                    )
                except KafkaException:
                    time.sleep(0.25)
            return 0  # only for a note: the replay goes on without it
        finally:
            consumer.close()

    def _delivered(self, err, message) -> None:
        if err is not None:
            self.failures.append(str(err))

    def _produce(self, **record) -> None:
        while True:
            try:
                self.producer.produce(self.topic, on_delivery=self._delivered, **record)
                break
            except BufferError:  # the local queue is full: wait for the broker to catch up
                self.producer.poll(0.1)
        self.producer.poll(0)

    def elements(self, items) -> None:
        for ts, item in items:
            source = getattr(item, "source", None) or getattr(item, "path", "")
            self._produce(
                key=source.encode("utf-8", "surrogateescape"),
                value=self.coder.encode(item),
                timestamp=max(0, int(ts * 1000)),
            )

    def watermark_at(self, at: float, force: bool = False) -> None:
        if at == float("-inf") or at == float("inf"):
            return
        self.watermark = at
        now = time.monotonic()
        if force or now - self.last_marker >= MARKER_EVERY:
            self.last_marker = now
            self._markers(b"", at)

    def _markers(self, value: bytes, at: float) -> None:
        for partition in range(self.partitions):
            self._produce(
                key=self.marker_key,
                value=value,
                partition=partition,
                timestamp=max(0, int(at * 1000)),
            )

    def end(self, newest: float) -> None:
        """The replay is done: the end markers, then every record confirmed (an empty replay
        has no time of its own: its markers are stamped 0)."""
        at = self.watermark if self.watermark is not None else newest
        self._markers(END, at if math.isfinite(at) else 0.0)

    def flush(self, timeout: float) -> int:
        """Waits for the broker to confirm everything; returns what is left unconfirmed."""
        return self.producer.flush(timeout)


def produce(args, make_poll, settings, mark_late_line, say) -> int:
    """``beam-tally produce ... --to kafka://HOST:PORT/TOPIC``: one replay (or a follow, until
    Ctrl-C) written into the topic; exits once the broker confirmed every record."""
    import signal

    from beam_tally.live.replay import Elements, End, Session, SystemClock

    writer = KafkaWriter(args.to, args.kind, args.partitions, args.broker_timeout)
    clock = SystemClock()
    late = sent = 0

    def mark_late(ts, line, behind):
        nonlocal late
        marked = mark_late_line(ts, line, behind, settings.max_delay)
        late += marked is not line
        return marked

    stop: list[int] = []
    handlers = {
        signum: signal.signal(signum, lambda signum, frame: stop.append(signum))
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    if writer.existing:
        say(
            f"note: topic {writer.topic} already holds {writer.existing:,} records. A consumer "
            "reading it from its start sees them too, and a producer that ended there ends "
            "its watermark: use a new topic per replay, unless producers write this one "
            "together (then give the consumer --producers N)"
        )
    mode = "following" if args.follow else "replaying"
    say(
        f"{mode} {args.kind} into topic {writer.topic} at {writer.bootstrap} "
        f"({writer.partitions} partitions, producer {writer.id})"
    )
    session = Session(
        make_poll(clock), settings, clock, mark_late if args.kind == "access" else None
    )
    try:
        for event in session.events():
            if stop:
                break
            if isinstance(event, End):
                writer.end(session.sent)
            elif isinstance(event, Elements):
                if not sent:
                    first, at = session.pacer.origin or (event.items[0][0], time.time())
                    say(f"first element: event time {first:.0f} due at {at:.3f}")
                sent += len(event.items)
                writer.elements(event.items)
            else:
                writer.watermark_at(event.at)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    left = writer.flush(args.broker_timeout)
    if left or writer.failures:
        reason = writer.failures[0] if writer.failures else f"{left} records unconfirmed"
        raise RuntimeError(f"the broker did not take every record: {reason}")
    ended = "stopped" if stop else "replay finished"
    say(f"{ended}: {sent:,} elements written ({late:,} late)")
    return 0


# The sink that a replay after a restore does not duplicate ---------------------------------

ONCE_INFIX = "-once-"


def once_name(name: str, line: str) -> str:
    """``stats.jsonl`` + a line -> ``stats-once-<16 hex of the line's SHA-256>.jsonl``."""
    import hashlib

    stem, ext = os.path.splitext(name)
    digest = hashlib.sha256(line.encode("utf-8")).hexdigest()[:16]
    return f"{stem}{ONCE_INFIX}{digest}{ext}"


class _WriteOnceFn(beam.DoFn):
    """Each element's line into its own file named by its content (``once_name``), created
    only if absent (a hard link of a finished temporary file: atomic, and refused when the
    name exists). Emits the elements it wrote first, so the console prints each once too."""

    def __init__(self, directory: str, name: str, to_text) -> None:
        self.directory = directory
        self.name = name
        self.to_text = to_text

    def process(self, element):
        line = element if self.to_text is None else self.to_text(element)
        final = os.path.join(self.directory, once_name(self.name, line))
        if os.path.exists(final):  # written before a restore: the replay of it is a no-op
            return
        tmp = os.path.join(self.directory, f".{uuid.uuid4().hex}.tmp")
        with open(tmp, "wb") as handle:
            handle.write(line.encode("utf-8") + b"\n")
        try:
            os.link(tmp, final)
        except FileExistsError:
            return
        finally:
            os.remove(tmp)
        yield element


class WriteJsonLinesOnce(beam.PTransform):
    """``{file name: PCollection}`` -> files ``NAME-once-*.jsonl`` under a local ``directory``,
    one per distinct element, written as the run goes; returns ``{file name: the elements
    written for the first time}``. Every output line is a function of its window's input, so
    Flink replaying the input after a restore recomputes the same lines and writes nothing
    twice (readers glob ``NAME*.jsonl``, as for the other live sink)."""

    def __init__(self, directory: str, formats: dict | None = None) -> None:
        super().__init__()
        self.directory = directory
        self.formats = formats or {}

    def expand(self, named):
        return {
            name: pcoll
            | f"Write {name}"
            >> beam.ParDo(
                _WriteOnceFn(self.directory, name, self.formats.get(name))
            ).with_output_types(pcoll.element_type)
            for name, pcoll in named.items()
        }
