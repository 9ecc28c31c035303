"""The Kafka leg of ``bench_streaming.py --kafka``: the same traffic through ``produce --to
kafka://`` -> ``monitor --streaming --source kafka://... --runner=FlinkRunner`` (embedded Flink),
against a broker that ``scripts/kafka.sh`` starts in a temporary folder and stops at the end.

* throughput: the whole traffic written into a topic first, then read by one consumer; lines/s
  over the consumer's whole process (Flink's start-up included) and from the moment its job
  runs to its end, the alerts checked equal to the batch ones;
* latency: the consumer's job running first, then the producer paced at ``--speedup``; for each
  alert, the time from when the lines of its second were due to when the consumer printed it.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time

import harness

KAFKA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts", "kafka.sh")


class Broker:
    def __init__(self, state: str) -> None:
        self.env = {**os.environ, "BEAM_TALLY_KAFKA": state}

    def __enter__(self) -> str:
        started = subprocess.run(
            ["bash", KAFKA, "start"],
            check=False,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if started.returncode != 0:
            raise harness.BenchError(f"no Kafka broker: {started.stderr[-500:]}")
        return started.stdout.strip().splitlines()[-1]

    def __exit__(self, *exc) -> None:
        subprocess.run(
            ["bash", KAFKA, "stop"], check=False, env=self.env, capture_output=True, timeout=120
        )


def _topic(address: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    from beam_tally.io.kafka import TOPIC_CONFIG

    admin = AdminClient({"bootstrap.servers": address})
    admin.create_topics([NewTopic(topic, 2, 1, config=dict(TOPIC_CONFIG))])[topic].result(60)


def _consumer(child, address: str, topic: str, out: str):
    return child(
        "monitor", "--streaming", "--source", f"kafka://{address}/{topic}",
        "--runner=FlinkRunner", "--output", out,
    )  # fmt: skip


def _job_runs(consumer, timeout: float) -> float:
    """The wall time at which the consumer said its job runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any("the job runs" in line for line in consumer.errors):
            return time.time()
        if consumer.popen.poll() is not None:
            break
        time.sleep(0.05)
    raise harness.BenchError(f"the consumer's job did not start: {consumer.errors[-5:]}")


def throughput(args, path: str, lines: int, batch_alerts, tmp: str, address: str) -> None:
    from bench_streaming import Child, alerts

    producer = Child("produce", "access", "--input", path, "--to", f"kafka://{address}/bench")
    try:
        producer.wait(args.timeout)
    finally:
        producer.stop()
    out = os.path.join(tmp, "kafka_live")
    consumer = _consumer(Child, address, "bench", out)
    try:
        running = _job_runs(consumer, args.timeout)
        whole = consumer.wait(args.timeout)
    finally:
        consumer.stop()
    if alerts(out) != batch_alerts:
        raise harness.BenchError(f"Kafka alerts differ: {alerts(out)[:4]} vs {batch_alerts[:4]}")
    after = consumer.started + whole - running
    print(
        f"  kafka  topic -> Flink monitor {whole:7.2f} s  {lines / whole:>9,.0f} lines/s "
        f"(whole process; {after:.2f} s, {lines / after:,.0f} lines/s once its job runs)"
    )


def latency(args, path: str, tmp: str, address: str) -> None:
    from bench_streaming import Child, alert_delays

    _topic(address, "latency")
    consumer = _consumer(Child, address, "latency", os.path.join(tmp, "kafka_latency"))
    producer = None
    try:
        _job_runs(consumer, args.timeout)
        producer = Child(
            "produce", "access", "--input", path, "--to", f"kafka://{address}/latency",
            "--speedup", str(args.speedup),
        )  # fmt: skip
        producer.wait(args.timeout)
        consumer.wait(args.timeout)
    finally:
        for child in (consumer, producer):
            if child is not None:
                child.stop()
    delays = alert_delays(producer, consumer, args.speedup)
    print(
        f"  kafka line written -> alert printed: median {statistics.median(delays):.3f} s, "
        f"min {min(delays):.3f} s, max {max(delays):.3f} s over {len(delays)} alerts and "
        "recoveries"
    )


def run(args, throughput_path: str, lines: int, batch_alerts, latency_path: str, tmp: str):
    print("\nkafka: the same lines through a broker (scripts/kafka.sh) and embedded Flink")
    with Broker(os.path.join(tmp, "kafka_broker")) as address:
        throughput(args, throughput_path, lines, batch_alerts, tmp, address)
        latency(args, latency_path, tmp, address)
