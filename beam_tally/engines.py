"""The engines besides the DirectRunner, fetched with the ordinary clients into a cache outside
the repository, and the runner options that point Beam at them.

- ``flink``: Beam's Flink job server, resolved with Maven (``mvn dependency:copy-dependencies``)
  and started through a small launcher jar whose manifest lists the resolved jars;
- ``prism``: Beam's Prism runner, built with ``go install`` at the installed Beam's version;
- ``flink-cluster``: a Flink distribution for ``scripts/flink_cluster.sh``, assembled from
  PyPI's ``apache-flink`` (its ``bin/`` and ``conf/``) and ``apache-flink-libraries`` (``lib/``,
  ``opt/``, ``plugins/``);
- ``sdk-worker``: the Python SDK's worker boot program (``go install``), which a worker pool
  runs to fetch and install a job's staged packages, as Beam's container does;
- ``kafka``: Apache Kafka's broker (``kafka_2.13``) for ``scripts/kafka.sh``, resolved with Maven;
- ``kafka-io``: Beam's Java KafkaIO with an expansion service for the cross-language
  ``ReadFromKafka``, resolved with Maven at the job server's Beam version, and a job server
  launcher whose class path adds KafkaIO, so Flink runs the expanded Java read in its own JVM
  (the ``EMBEDDED`` environment: no Docker).

Maven Central serves Beam's Flink runner here only up to Beam 2.62.0 (later releases lack
``beam-runners-java-job-service`` or the runner itself), so the job server is 2.62.0 for Flink
1.19 whatever the installed SDK; the portable protocol between them is stable and the tests
compare every output with the DirectRunner's. Prism is built at the installed SDK's version.

Each engine is fetched once (one line on stderr says what and where), under a lock, into a
temporary folder renamed into place; a cached engine is used offline. ``beam-tally engines``
fetches ahead of time and lists what is cached.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

from beam_tally.errors import FetchError, HelpRequested, UsageError, UsageParser

# The newest Beam release whose Flink runner Maven Central serves with every dependency here,
# and the Flink version that runner is built for (see the module docstring).
FLINK_JOB_SERVER_BEAM = "2.62.0"
FLINK_VERSION = "1.19"
FLINK_DIST_VERSION = "1.19.0"  # the Flink release that job server is built against
BEAM_GO_MODULE = "github.com/apache/beam/sdks/v2"
# Java 17 closes the JDK's internals that Flink's serializers open (Flink's own config.yaml
# passes the same flags to its JobManager and TaskManagers).
JAVA_17_OPENS = tuple(
    f"--add-opens=java.base/{package}=ALL-UNNAMED"
    for package in (
        "java.lang",
        "java.lang.reflect",
        "java.io",
        "java.net",
        "java.nio",
        "sun.nio.ch",
        "java.text",
        "java.time",
        "java.util",
        "java.util.concurrent",
        "java.util.concurrent.atomic",
        "java.util.concurrent.locks",
    )
)
# Kafka's broker for scripts/kafka.sh, and the kafka-clients KafkaIO runs with (KafkaIO 2.62
# declares kafka-clients "provided"; 3.9 is the newest line it is built and tested against).
KAFKA_VERSION = "4.1.1"
KAFKA_CLIENTS_VERSION = "3.9.1"
EXPANSION_SERVICE_MAIN = "org.apache.beam.sdk.expansion.service.ExpansionService"
ENGINES = ("flink", "prism", "flink-cluster", "sdk-worker", "kafka", "kafka-io")
FETCH_TIMEOUT = 1800  # seconds for one fetch: a first Maven resolution downloads ~150 MB


def beam_version() -> str:
    return version("apache-beam")


def cache_root() -> Path:
    """``$BEAM_TALLY_CACHE``, else ``$XDG_CACHE_HOME/beam-tally``, else ``~/.cache/beam-tally``."""
    if os.environ.get("BEAM_TALLY_CACHE"):
        return Path(os.environ["BEAM_TALLY_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "beam-tally"


def _require(tool: str, what: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise UsageError(f"{what} needs {tool!r} on PATH: install it ({_INSTALL_HINTS[tool]})")
    return path


_INSTALL_HINTS = {
    "java": "a JDK 17, e.g. apt-get install openjdk-17-jdk-headless",
    "mvn": "Maven 3, e.g. apt-get install maven",
    "go": "Go 1.26 or newer (Beam's go.mod asks for it), from go.dev or the machine's image",
    "javac": "a JDK 17 (not only a JRE), e.g. apt-get install openjdk-17-jdk-headless",
}


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """One fetch of ``name`` at a time across processes (tests, two CLI runs)."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _fetch(what: str, target: Path, fill) -> Path:
    """Runs ``fill(tmp)`` into a temporary folder beside ``target`` and renames it into place,
    unless ``target`` is already there (cached: nothing runs, nothing is printed)."""
    if target.exists():
        return target
    with _locked(target.name):
        if target.exists():  # fetched by another process while this one waited
            return target
        print(
            f"beam-tally: fetching {what} into {target} (first use only; later runs use the cache)",
            file=sys.stderr,
            flush=True,
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            fill(tmp)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _client(cmd: list[str], what: str, cwd: Path, env: dict | None = None) -> None:
    try:
        done = subprocess.run(
            cmd,
            cwd=cwd,
            env=None if env is None else {**os.environ, **env},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=FETCH_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        raise FetchError(f"fetching {what} took over {FETCH_TIMEOUT} s: {cmd[0]} stopped") from err
    if done.returncode != 0:
        lines = [line.strip() for line in (done.stdout + done.stderr).splitlines()]
        useful = [line for line in lines if "ERROR" in line or "error" in line] or lines or [""]
        raise FetchError(
            f"{Path(cmd[0]).name} could not fetch {what} (exit {done.returncode}): "
            f"{' '.join(useful[0].split())[:300]}"
        )


# Flink job server -------------------------------------------------------------------------

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>beam-tally.engines</groupId>
  <artifactId>{name}</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
{dependencies}
  </dependencies>
</project>
"""


def _dependency(coordinates: str, exclude: str = "") -> str:
    """A pom ``<dependency>`` for ``group:artifact:version``, without ``exclude`` (a group)."""
    group, artifact, version_ = coordinates.split(":")
    exclusion = (
        f"<exclusions><exclusion><groupId>{exclude}</groupId><artifactId>*</artifactId>"
        "</exclusion></exclusions>"
        if exclude
        else ""
    )
    return (
        f"    <dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId>"
        f"<version>{version_}</version>{exclusion}</dependency>"
    )


def _maven_jars(mvn: str, tmp: Path, name: str, dependencies: list[str], what: str) -> list[str]:
    """Resolves ``dependencies`` (pom lines) with their runtime dependencies into
    ``tmp/lib``; returns the jars' names, sorted."""
    (tmp / "pom.xml").write_text(_POM.format(name=name, dependencies="\n".join(dependencies)))
    _client(
        [
            mvn,
            "-B",
            "-q",
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            "-DoutputDirectory=lib",
        ],
        what,
        tmp,
    )
    return sorted(path.name for path in (tmp / "lib").glob("*.jar"))


JOB_SERVER_MAIN = "org.apache.beam.runners.flink.FlinkJobServerDriver"


def engine_path(engine: str) -> Path:
    """Where ``engine`` (one of ``ENGINES``) lives in the cache, fetched or not."""
    root, beam, flink = cache_root(), FLINK_JOB_SERVER_BEAM, FLINK_VERSION
    return {
        "flink": root
        / f"flink-job-server-{beam}-flink-{flink}"
        / f"beam-runners-flink-{flink}-job-server-{beam}.jar",
        "prism": root / f"prism-{beam_version()}" / "prism",
        "flink-cluster": root / f"flink-{FLINK_DIST_VERSION}",
        "sdk-worker": root / f"sdk-worker-boot-{beam_version()}" / "sdk-worker-boot",
        "kafka": root / f"kafka-{KAFKA_VERSION}",
        # named by the Java read's source too: a changed read is compiled anew
        "kafka-io": root / f"kafka-io-{beam}-{_event_time_read_digest()}",
    }[engine]


def flink_job_server() -> Path:
    """The job server's launcher jar (``java -jar`` runs it, as Beam's FlinkRunner does)."""
    jar = engine_path("flink")
    home = jar.parent
    if jar.exists():
        return jar
    _require("java", "--runner=FlinkRunner")
    mvn = _require("mvn", "fetching Beam's Flink job server")

    def fill(tmp: Path) -> None:
        runner = f"org.apache.beam:beam-runners-flink-{FLINK_VERSION}:{FLINK_JOB_SERVER_BEAM}"
        what = f"Beam {FLINK_JOB_SERVER_BEAM}'s Flink {FLINK_VERSION} job server"
        jars = _maven_jars(mvn, tmp, "flink-job-server", [_dependency(runner)], what)
        write_launcher_jar(tmp / jar.name, JOB_SERVER_MAIN, [f"lib/{name}" for name in jars])

    _fetch(f"Beam {FLINK_JOB_SERVER_BEAM}'s Flink {FLINK_VERSION} job server (Maven)", home, fill)
    return jar


# Kafka: the broker, and Beam's KafkaIO for the cross-language read -------------------------


def kafka_broker() -> Path:
    """The folder whose ``lib/`` holds Kafka's broker and tools (``scripts/kafka.sh`` runs
    ``kafka.Kafka`` from it)."""
    home = engine_path("kafka")
    if home.exists():
        return home
    _require("java", "a Kafka broker")
    mvn = _require("mvn", "fetching Kafka's broker")

    def fill(tmp: Path) -> None:
        dependencies = [
            _dependency(f"org.apache.kafka:kafka_2.13:{KAFKA_VERSION}"),
            # Kafka logs through slf4j 1.7; this binds it to the log4j 2 that Kafka ships.
            _dependency("org.apache.logging.log4j:log4j-slf4j-impl:2.24.3"),
        ]
        _maven_jars(mvn, tmp, "kafka-broker", dependencies, f"Kafka {KAFKA_VERSION}")

    _fetch(f"Kafka {KAFKA_VERSION}'s broker (Maven)", home, fill)
    return home


def kafka_io() -> Path:
    """The folder of Beam's Java KafkaIO at the job server's Beam version: ``lib/``,
    ``expansion-service.jar`` (``java -jar expansion-service.jar PORT`` serves the
    cross-language Kafka transforms) and ``flink-job-server.jar`` (the Flink job server with
    KafkaIO on its class path, to run them in the ``EMBEDDED`` environment)."""
    home = engine_path("kafka-io")
    if home.exists():
        return home
    server = flink_job_server()
    mvn = _require("mvn", "fetching Beam's KafkaIO")

    def fill(tmp: Path) -> None:
        beam = FLINK_JOB_SERVER_BEAM
        dependencies = [
            # Its Confluent schema-registry dependencies live outside Maven Central; the read
            # of plain bytes never loads them.
            _dependency(f"org.apache.beam:beam-sdks-java-io-kafka:{beam}", exclude="io.confluent"),
            _dependency(f"org.apache.beam:beam-sdks-java-expansion-service:{beam}"),
            _dependency(f"org.apache.kafka:kafka-clients:{KAFKA_CLIENTS_VERSION}"),
            # The Java SDK harness sizes its caches with jamm, which it declares "provided".
            _dependency("com.github.jbellis:jamm:0.4.0"),
        ]
        jars = _maven_jars(mvn, tmp, "kafka-io", dependencies, f"Beam {beam}'s KafkaIO")
        _build_event_time_read(tmp / "lib")
        jars.append(EVENT_TIME_READ_JAR)
        ours = [f"lib/{name}" for name in jars]
        write_launcher_jar(tmp / "expansion-service.jar", EXPANSION_SERVICE_MAIN, ours)
        # The job server's own jars first; KafkaIO's that it lacks after them.
        theirs = sorted(path.name for path in (server.parent / "lib").glob("*.jar"))
        shared = {_artifact(name) for name in theirs}
        extra = [
            path for path, name in zip(ours, jars, strict=True) if _artifact(name) not in shared
        ]
        first = [f"../{server.parent.name}/lib/{name}" for name in theirs]
        write_launcher_jar(tmp / "flink-job-server.jar", JOB_SERVER_MAIN, [*first, *extra])

    _fetch(f"Beam {FLINK_JOB_SERVER_BEAM}'s KafkaIO and expansion service (Maven)", home, fill)
    return home


EVENT_TIME_READ_JAR = "beam-tally-kafka-read.jar"
_EVENT_TIME_READ = "EventTimeKafkaRead.java"
_REGISTRAR = "org.apache.beam.sdk.expansion.ExternalTransformRegistrar"


def _event_time_read_source() -> Path:
    return Path(__file__).resolve().parent / "io" / _EVENT_TIME_READ


def _event_time_read_digest() -> str:
    return hashlib.sha256(_event_time_read_source().read_bytes()).hexdigest()[:12]


def _build_event_time_read(lib: Path) -> None:
    """Compiles ``beam_tally/io/EventTimeKafkaRead.java`` (KafkaIO's read with a
    producer-driven watermark, see its comment) against ``lib`` into ``lib``'s jar of it, with
    the service entry that makes the expansion service find it."""
    javac = _require("javac", "building beam-tally's Kafka read")
    source = _event_time_read_source()
    classes = lib.parent / "classes"
    _client(
        [javac, "-nowarn", "-d", str(classes), "-cp", str(lib / "*"), str(source)],
        "beam-tally's Kafka read (javac)",
        lib.parent,
    )
    with zipfile.ZipFile(lib / EVENT_TIME_READ_JAR, "w") as jar:
        jar.writestr(f"META-INF/services/{_REGISTRAR}", "beamtally.kafka.EventTimeKafkaRead\n")
        for path in sorted(classes.rglob("*.class")):
            jar.write(path, path.relative_to(classes).as_posix())
    shutil.rmtree(classes)


def _artifact(jar_name: str) -> str:
    """``kafka-clients-3.9.1.jar`` -> ``kafka-clients``: a jar's artifact without its version."""
    stem = jar_name.removesuffix(".jar")
    parts = stem.split("-")
    for i, part in enumerate(parts):
        if part[:1].isdigit():
            return "-".join(parts[:i])
    return stem


def write_launcher_jar(path: Path, main_class: str, class_path: list[str]) -> None:
    """A jar holding only a manifest: ``java -jar`` runs ``main_class`` over ``class_path``
    (paths relative to the jar's folder)."""
    lines = [
        "Manifest-Version: 1.0",
        f"Main-Class: {main_class}",
        "Class-Path: " + " ".join(class_path),
    ]
    with zipfile.ZipFile(path, "w") as jar:
        jar.writestr("META-INF/MANIFEST.MF", "".join(_manifest_line(line) for line in lines))


def _manifest_line(line: str) -> str:
    """A manifest header folded at 72 bytes, continuation lines starting with a space."""
    raw = line.encode("utf-8")
    pieces = [raw[:70]]
    pieces += [b" " + raw[i : i + 69] for i in range(70, len(raw), 69)]
    return "".join(piece.decode("utf-8") + "\r\n" for piece in pieces)


# Go-built engines: Prism and the SDK worker's boot program ---------------------------------


def _go_binary(engine: str, package: str, binary: str, what: str, needed_for: str) -> Path:
    path = engine_path(engine)
    home, name = path.parent, path.name
    if path.exists():
        return path
    go = _require("go", needed_for)

    def fill(tmp: Path) -> None:
        _client(
            [go, "install", f"{BEAM_GO_MODULE}/{package}@v{beam_version()}"],
            what,
            tmp,
            env={"GOBIN": str(tmp), "GOFLAGS": "-mod=mod"},
        )
        (tmp / binary).rename(tmp / name)

    _fetch(f"{what} v{beam_version()} (go install)", home, fill)
    return path


def prism() -> Path:
    return _go_binary(
        "prism", "go/cmd/prism", "prism", "Beam's Prism runner", "--runner=PrismRunner"
    )


def sdk_worker_boot() -> Path:
    return _go_binary(
        "sdk-worker", "python/container", "container", "Beam's Python worker boot", "a worker"
    )


# Flink distribution for a standalone cluster -----------------------------------------------

_DIST_PARTS = {  # folder of the archive -> folder of FLINK_HOME
    "pyflink/bin/": "bin/",
    "pyflink/conf/": "conf/",
    "deps/bin/": "bin/",
    "deps/lib/": "lib/",
    "deps/opt/": "opt/",
    "deps/plugins/": "plugins/",
}


def flink_dist() -> Path:
    """FLINK_HOME of a Flink distribution at the job server's Flink version, from PyPI."""
    home = engine_path("flink-cluster")
    if home.exists():
        return home
    _require("java", "a Flink cluster")

    def fill(tmp: Path) -> None:
        downloads = tmp / "downloads"
        _client(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "--dest",
                str(downloads),
                f"apache-flink=={FLINK_DIST_VERSION}",
                f"apache-flink-libraries=={FLINK_DIST_VERSION}",
            ],
            f"Flink {FLINK_DIST_VERSION}",
            tmp,
        )
        for archive in sorted(downloads.iterdir()):
            _unpack_dist(archive, tmp)
        shutil.rmtree(downloads)
        (tmp / "log").mkdir()
        for script in (tmp / "bin").iterdir():
            script.chmod(0o755)

    _fetch(f"Flink {FLINK_DIST_VERSION} (PyPI's apache-flink)", home, fill)
    return home


def _unpack_dist(archive: Path, home: Path) -> None:
    """Copies the distribution's folders out of a wheel (zip) or an sdist (tar.gz)."""

    def target(name: str) -> Path | None:
        inner = name.split("/", 1)[1] if archive.name.endswith(".tar.gz") else name
        for prefix, folder in _DIST_PARTS.items():
            if inner.startswith(prefix) and not inner.endswith("/"):
                relative = Path(folder) / inner[len(prefix) :]
                if ".." not in relative.parts and not relative.is_absolute():
                    return home / relative
        return None

    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as wheel:
            for info in wheel.infolist():
                dest = target(info.filename)
                if dest is not None:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with wheel.open(info) as src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out)
        return
    with tarfile.open(archive, "r:gz") as sdist:
        for member in sdist:
            dest = target(member.name) if member.isfile() else None
            if dest is not None:
                dest.parent.mkdir(parents=True, exist_ok=True)
                with sdist.extractfile(member) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out)


INSTALLERS = {
    "flink": flink_job_server,
    "prism": prism,
    "flink-cluster": flink_dist,
    "sdk-worker": sdk_worker_boot,
    "kafka": kafka_broker,
    "kafka-io": kafka_io,
}


# Runner options --------------------------------------------------------------------------


def _given(argv: list[str], flag: str) -> bool:
    return any(arg == flag or arg.startswith(flag + "=") for arg in argv)


def runner_name(options) -> str:
    from apache_beam.options.pipeline_options import StandardOptions

    runner = options.view_as(StandardOptions).runner
    name = runner if isinstance(runner, str) else type(runner).__name__
    return name.rsplit(".", 1)[-1].lower().removesuffix("runner")


_LOOPBACK_HOSTS = ("localhost", "127.", "[::1]", "::1")


def configure_runner(options, argv: list[str]) -> None:
    """Fills in what ``--runner=FlinkRunner`` and ``--runner=PrismRunner`` need and the user
    left out: the engine (fetched on first use), Flink's version and master, Java 17's flags,
    the SDK harness beside the launcher for a loopback cluster, quieter Prism logs."""
    name = runner_name(options)
    if name == "flink":
        _configure_flink(options, argv)
    elif name == "prism":
        _configure_prism(options, argv)


def _configure_flink(options, argv: list[str]) -> None:
    from apache_beam.options.pipeline_options import (
        FlinkRunnerOptions,
        JobServerOptions,
        PortableOptions,
    )

    from beam_tally.options import FlinkJobOptions, StreamOptions

    flink = options.view_as(FlinkRunnerOptions)
    source = options.view_as(StreamOptions).source or ""
    if not flink.flink_job_server_jar and source.startswith("kafka://"):
        # The job server with KafkaIO on its class path runs the read in its own JVM.
        flink.flink_version = FLINK_VERSION
        flink.flink_job_server_jar = str(kafka_io() / "flink-job-server.jar")
    if not flink.flink_job_server_jar:
        if _given(argv, "--flink_version") and flink.flink_version != FLINK_VERSION:
            raise UsageError(
                f"--flink_version {flink.flink_version}: Maven serves Beam's Flink job server "
                f"here for Flink {FLINK_VERSION} only; drop --flink_version, or give "
                "--flink_job_server_jar"
            )
        flink.flink_version = FLINK_VERSION
        flink.flink_job_server_jar = str(flink_job_server())
    if not _given(argv, "--flink_master"):
        flink.flink_master = "[local]"
    server = options.view_as(JobServerOptions)
    present = set(server.job_server_jvm_properties or [])
    server.job_server_jvm_properties = [
        *(server.job_server_jvm_properties or []),
        *(flag for flag in JAVA_17_OPENS if flag not in present),
    ]
    _stop_job_servers_whole()
    checkpoints = options.view_as(FlinkJobOptions)
    if source.startswith("kafka://") and checkpoints.max_bundle_time_mills is None:
        # Each Python stage passes the watermark on only as its bundle ends: with Beam's 1 s
        # the line-to-alert latency was 5.2 s (median), with 100 ms 0.8 s (bench_streaming).
        checkpoints.max_bundle_time_mills = 100
    if checkpoints.checkpointing_interval:
        # Without it a checkpoint can hold a source's offsets past lines that were still in a
        # Python stage's bundle (combiner tables, state not yet written back): a restore
        # then misses them. Found with the failover test (tests/test_kafka.py).
        checkpoints.finish_bundle_before_checkpointing = True
    if flink.flink_master == "[local]":
        _local_restore(options)
    portable = options.view_as(PortableOptions)
    master = flink.flink_master.removeprefix("http://").removeprefix("https://")
    if not portable.environment_type and master.startswith(_LOOPBACK_HOSTS):
        # A cluster on this machine reaches an SDK harness in the launching process, as the
        # embedded MiniCluster does; Beam's default for a remote master would be Docker.
        portable.environment_type = "LOOPBACK"


def _stop_job_servers_whole() -> None:
    """Beam's ``SubprocessJobServer.stop`` removes its artifact folder before it stops the job
    server, and that removal fails when the server deletes staged jars at the same moment
    (seen with KafkaIO's): the JVM was then left running after the run, 1.5 GB each. Here the
    server is stopped first and the folder removed whatever is left of it."""
    from apache_beam.runners.portability import job_server

    def stop(self):
        try:
            return self._server.stop() if self._server is not None else None
        finally:
            if self._local_temp_root:
                shutil.rmtree(self._local_temp_root, ignore_errors=True)
                self._local_temp_root = None

    job_server.SubprocessJobServer.stop = stop


def _local_restore(options) -> None:
    """Beam 2.62's Flink runner applies ``--savepoint_path`` to a remote cluster's job only;
    an embedded MiniCluster takes it from its Flink configuration, so the restore is written
    into one (``--flink_conf_dir``, removed at exit)."""
    import atexit

    from beam_tally.options import FlinkJobOptions

    checkpoints = options.view_as(FlinkJobOptions)
    if not checkpoints.savepoint_path:
        return
    if checkpoints.flink_conf_dir:
        raise UsageError(
            "--savepoint_path on the embedded Flink is applied through a Flink configuration "
            "that beam-tally writes: drop --flink_conf_dir, or put execution.savepoint.path "
            "into yours and drop --savepoint_path"
        )
    folder = tempfile.mkdtemp(prefix="beam-tally-flink-conf-")
    atexit.register(shutil.rmtree, folder, True)
    path = checkpoints.savepoint_path.removeprefix("file://")
    # Flink's legacy flink-conf.yaml is "key: value" lines, not YAML: quotes would stay in the
    # path (seen: FileNotFoundException for 'chk-5"'), and '#' starts a comment.
    if any(char in path for char in "#\n\r"):
        raise UsageError(f"--savepoint_path {path!r}: give a path without '#' or line breaks")
    Path(folder, "flink-conf.yaml").write_text(f"execution.savepoint.path: {path}\n")
    checkpoints.flink_conf_dir = folder


def _configure_prism(options, argv: list[str]) -> None:
    from apache_beam.options.pipeline_options import PrismRunnerOptions

    prism_options = options.view_as(PrismRunnerOptions)
    if not prism_options.prism_location:
        prism_options.prism_location = str(prism())
    if not _given(argv, "--prism_log_level"):
        prism_options.prism_log_level = "warn"  # its per-job INFO lines would mix with ours


# beam-tally engines ----------------------------------------------------------------------

HELP = f"""usage: beam-tally engines install flink|prism|flink-cluster|sdk-worker|kafka|kafka-io|all
       beam-tally engines list

Fetches the engines the jobs run on besides the DirectRunner into {cache_root()}
($BEAM_TALLY_CACHE overrides it). A run with --runner=FlinkRunner or --runner=PrismRunner fetches
what it needs by itself on first use; this does it ahead of time.

  flink          Beam {FLINK_JOB_SERVER_BEAM}'s Flink {FLINK_VERSION} job server, Maven (java, mvn)
  prism          Beam's Prism runner at the installed Beam's version, with go install (needs go)
  flink-cluster  Flink {FLINK_DIST_VERSION} for scripts/flink_cluster.sh, from PyPI (needs java)
  sdk-worker     the Python SDK worker's boot program, with go install (needs go)
  kafka          Kafka {KAFKA_VERSION}'s broker for scripts/kafka.sh, Maven (java, mvn)
  kafka-io       Beam {FLINK_JOB_SERVER_BEAM}'s KafkaIO and expansion service, Maven (java, mvn)
  all            every one of them

'list' prints each engine with its path, or 'not fetched'."""


def run(argv: list[str]) -> int:
    parser = UsageParser(prog="beam-tally engines", allow_abbrev=False, add_help=False)
    parser.add_argument("action", choices=["install", "list"])
    parser.add_argument("engine", nargs="?", choices=[*ENGINES, "all"])
    if any(arg in ("-h", "--help") for arg in argv):
        raise HelpRequested(HELP)
    args = parser.parse_args(argv)
    if args.action == "list":
        if args.engine:
            raise UsageError("'engines list' takes no engine name")
        for engine in ENGINES:
            path = engine_path(engine)
            print(f"{engine:14} {path if path.exists() else 'not fetched'}")
        return 0
    if not args.engine:
        raise UsageError(
            "say which engine to install: flink, prism, flink-cluster, sdk-worker, kafka, "
            "kafka-io or all"
        )
    for engine in ENGINES if args.engine == "all" else (args.engine,):
        print(f"{engine:14} {INSTALLERS[engine]()}")
    return 0
