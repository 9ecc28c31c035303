"""Faults on the live path, each bounded: garbage on the producer's port, a stalled consumer, a
consumer killed and restarted. Whatever happens to one consumer, the producer keeps serving,
and every consumer that runs to the end reports exactly what batch reports over the same lines.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import time

from beam_tally.generate.access import generate_access
from tests.test_streaming_cli import DEADLINE, Proc, batch, read_outputs, start_producer


def by_start(out) -> list[dict]:
    return sorted(read_outputs(str(out), "stats"), key=lambda stats: stats["start"])


def alerts_of(out) -> list[tuple]:
    return sorted((a["kind"], a["time"], a["hits"]) for a in read_outputs(str(out), "alerts"))


def batch_outputs(logs, out) -> tuple[list, list]:
    batch("monitor", "--input", str(logs), "--output", str(out))
    return by_start(out), alerts_of(out)


def traffic(tmp_path, seconds: int = 400):
    logs = tmp_path / "a.csv"
    generate_access(str(logs), fmt="csv", seconds=seconds, rate=3, bursts=[(60, 150, 20)], seed=21)
    return logs


def consumer(source: str, out, *args: str) -> Proc:
    return Proc("monitor", "--streaming", "--source", source, "--output", str(out), *args)


def test_garbage_on_the_port_leaves_the_producer_serving(tmp_path):
    logs = traffic(tmp_path)
    expected = batch_outputs(logs, tmp_path / "batch")
    procs: list[Proc] = []
    try:
        producer, source = start_producer("access", "--input", str(logs), "--follow")
        procs.append(producer)
        host, port = source.split(":")
        rng = random.Random(5)
        payloads = [
            bytes(rng.randrange(256) for _ in range(4096)),
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes(rng.randrange(256) for _ in range(512)),
            b"",
        ]
        for payload in payloads:  # each a connection of its own, closed at once
            with socket.create_connection((host, int(port)), timeout=5) as conn:
                conn.sendall(payload)
                conn.settimeout(2)
                with contextlib.suppress(TimeoutError, ConnectionError):  # whatever it answers
                    conn.recv(1024)
        assert producer.popen.poll() is None  # still serving
        reader = consumer(source, tmp_path / "live")
        procs.append(reader)
        reader.wait_for_line(r"Recovered from high traffic", timeout=DEADLINE)
        # The last window is reported once the followed file has been quiet a little (its
        # event time then passes): stop only after it, so every window has been reported.
        last = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(expected[0][-1]["start"]))
        reader.wait_for_line(rf"^{last}-", timeout=DEADLINE)
        reader.popen.send_signal(signal.SIGINT)  # a followed stream never ends by itself
        assert reader.wait(timeout=DEADLINE) == 0, reader.errors[-5:]
    finally:
        for proc in reversed(procs):
            proc.stop()
    assert "Traceback" not in "\n".join(producer.errors)
    assert alerts_of(tmp_path / "live") == expected[1]
    assert by_start(tmp_path / "live") == expected[0]  # every window reported, each once


def test_a_stalled_consumer_holds_up_nobody_and_finishes_complete(tmp_path):
    logs = traffic(tmp_path)
    expected = batch_outputs(logs, tmp_path / "batch")
    procs: list[Proc] = []
    try:
        producer, source = start_producer("access", "--input", str(logs), "--speedup", "200")
        procs.append(producer)
        stalled = consumer(source, tmp_path / "stalled")
        procs.append(stalled)
        stalled.wait_for_line(r"^20\d\d-", timeout=DEADLINE)
        os.kill(stalled.popen.pid, signal.SIGSTOP)  # stops reading mid-stream
        try:
            other = consumer(source, tmp_path / "other")
            procs.append(other)
            assert other.wait(timeout=DEADLINE) == 0, other.errors[-5:]
        finally:
            os.kill(stalled.popen.pid, signal.SIGCONT)
        assert stalled.wait(timeout=DEADLINE) == 0, stalled.errors[-5:]
    finally:
        for proc in reversed(procs):
            proc.stop()
    for out in ("other", "stalled"):
        assert by_start(tmp_path / out) == expected[0], out
        assert alerts_of(tmp_path / out) == expected[1], out


def test_a_consumer_killed_and_restarted_reports_everything_once(tmp_path):
    """A consumer killed mid-stream leaves what it had written; one restarted into the same
    folder replaces it with a whole replay: every window and alert once, as in batch."""
    logs = traffic(tmp_path, seconds=1500)  # 15 s at speedup 100: killed well before its end
    expected = batch_outputs(logs, tmp_path / "batch")
    out = tmp_path / "live"
    procs: list[Proc] = []
    try:
        producer, source = start_producer("access", "--input", str(logs), "--speedup", "100")
        procs.append(producer)
        # Outputs roll every second, so a kill leaves finished files (the roll under way, in
        # a hidden temporary file, is lost with the run; the restart replays it).
        first = consumer(source, out, "--roll_seconds", "1")
        procs.append(first)
        first.wait_for_line(r"High traffic generated an alert", timeout=DEADLINE)
        time.sleep(1.5)
        assert first.popen.poll() is None  # still running when killed
        first.popen.kill()
        first.wait(timeout=30)
        written = by_start(out)  # whole windows, in event-time order: the first of batch's
        assert written and written == expected[0][: len(written)]
        time.sleep(0.5)
        again = consumer(source, out)
        procs.append(again)
        assert again.wait(timeout=DEADLINE) == 0, again.errors[-5:]
    finally:
        for proc in reversed(procs):
            proc.stop()
    assert by_start(out) == expected[0]  # no window twice, none lost
    assert alerts_of(out) == expected[1]
