"""Throwaway local servers for the demo and the tests: a Mosquitto broker and a PostgreSQL cluster.

Each server listens on a free loopback port, keeps its files in a temporary
folder owned by the user it runs as, and is stopped by its PID. PostgreSQL
refuses to run as root, so when valuegate runs as root the cluster runs as
the ``postgres`` user (or ``nobody``); Mosquitto started as root drops to
the ``mosquitto`` user, so its folder belongs to that user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import structlog

__all__ = (
    "ServiceError",
    "free_port",
    "wait_for_port",
    "find_mosquitto",
    "find_postgres_bin",
    "MosquittoServer",
    "PostgresServer",
)

log = structlog.get_logger("valuegate.services")


class ServiceError(RuntimeError):
    """A local server could not be found or started; the message names what to install or check."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, *, timeout_s: float, process: subprocess.Popen[bytes] | None = None, what: str = "server") -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            msg = f"{what} exited with status {process.returncode} before it listened on port {port}"
            raise ServiceError(msg)
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    msg = f"{what} did not listen on 127.0.0.1:{port} within {timeout_s:.0f} s"
    raise ServiceError(msg)


def _which(name: str, extra_dirs: list[str]) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in extra_dirs:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def find_mosquitto() -> str:
    path = _which("mosquitto", ["/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin"])
    if path is None:
        msg = "Mosquitto not found on PATH or in /usr/sbin; install it (Debian: apt-get install mosquitto) or run ./run setup"
        raise ServiceError(msg)
    return path


def find_postgres_bin() -> Path:
    """Return the folder holding ``postgres`` and ``initdb``, preferring the newest Debian cluster version."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("postgres"):
        return Path(os.path.realpath(on_path)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if candidates:
        return Path(candidates[-1]).parent
    msg = "PostgreSQL server binaries (initdb, postgres) not found; install them (Debian: apt-get install postgresql) or run ./run setup"
    raise ServiceError(msg)


def _service_user(preferred: str) -> pwd.struct_passwd | None:
    """Return the unprivileged user to run a server as when we are root, or None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in (preferred, "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    msg = f"running as root, but neither user {preferred!r} nor 'nobody' exists to run the server as"
    raise ServiceError(msg)


def _stop_pid(process: subprocess.Popen[bytes] | None, sig: int, timeout_s: float) -> None:
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, sig)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


@dataclass
class _LocalServer:
    """What both servers share: the folder, the process, its log and stopping by PID."""

    folder: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    # Set by each server: its log file name, event prefix, and the signal that stops it cleanly.
    _label: ClassVar[str] = "server"
    _stop_signal: ClassVar[int] = signal.SIGTERM
    _stop_timeout_s: ClassVar[float] = 10.0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> _LocalServer:
        raise NotImplementedError

    def _open_log(self) -> Any:
        assert self.folder is not None
        with contextlib.suppress(AttributeError):
            self._log_file.close()  # a restart opens the log again
        self._log_file = open(self.folder / f"{self._label}.log", "ab")  # noqa: SIM115 - closed in stop()
        return self._log_file

    def log_tail(self, lines: int = 20) -> str:
        if self.folder is None:
            return ""
        path = self.folder / f"{self._label}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self, *, remove: bool = True) -> None:
        """Stop the server by its PID and, unless ``remove`` is false, delete its folder; safe to call twice."""
        _stop_pid(self.process, self._stop_signal, self._stop_timeout_s)
        if self.process is not None:
            log.info(f"{self._label}_stopped", port=getattr(self, "port", None), pid=self.process.pid)
        self.process = None
        with contextlib.suppress(AttributeError):
            self._log_file.close()
        if remove and self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class MosquittoServer(_LocalServer):
    """A Mosquitto broker on a free loopback port; use as a context manager or call start() and stop()."""

    port: int = 0
    persistence: bool = False
    extra_config: list[str] = field(default_factory=list)

    _label: ClassVar[str] = "mosquitto"

    def start(self) -> MosquittoServer:
        binary = find_mosquitto()
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="valuegate-mosquitto-"))
        self.port = self.port or free_port()
        user = _service_user("mosquitto")
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.folder}/",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            # Sessions of offline clients keep every QoS 1 message instead of dropping past 1000.
            "max_queued_messages 0",
            "max_inflight_messages 100",
            "set_tcp_nodelay true",
            *self.extra_config,
        ]
        if user is not None:
            lines.insert(0, f"user {user.pw_name}")
            os.chown(self.folder, user.pw_uid, user.pw_gid)
        config = self.folder / "mosquitto.conf"
        config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        config.chmod(0o644)
        self.process = subprocess.Popen([binary, "-c", str(config)], stdout=self._open_log(), stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for_port(self.port, timeout_s=10, process=self.process, what="Mosquitto")
        except ServiceError as exc:
            self.stop()
            raise ServiceError(f"{exc}; log: {self.log_tail()}") from exc
        log.info("mosquitto_started", port=self.port, pid=self.pid)
        return self

    def restart(self) -> None:
        """Stop and start again on the same port and folder (persistence decides what survives)."""
        _stop_pid(self.process, signal.SIGTERM, 10)
        self.process = None
        self.start()

    def kill(self) -> None:
        """Kill the broker with SIGKILL, as a crash would; the folder stays for a restart."""
        _stop_pid(self.process, signal.SIGKILL, 5)
        self.process = None


@dataclass
class PostgresServer(_LocalServer):
    """A throwaway PostgreSQL cluster on a free loopback port, with trust authentication on loopback only."""

    port: int = 0
    database: str = "valuegate"
    user: str = "valuegate"
    timescaledb: bool = False

    _label: ClassVar[str] = "postgres"
    # SIGINT is PostgreSQL's fast shutdown: open sessions are ended, nothing waits for clients.
    _stop_signal: ClassVar[int] = signal.SIGINT
    _stop_timeout_s: ClassVar[float] = 20.0

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def _run_as(self) -> dict[str, object]:
        account = _service_user("postgres")
        if account is None:
            return {}
        return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}

    def start(self) -> PostgresServer:
        bin_dir = find_postgres_bin()
        self.port = self.port or free_port()
        self.folder = self.folder or Path(tempfile.mkdtemp(prefix="valuegate-pg-"))
        data = self.folder / "data"
        run_as = self._run_as()
        if run_as:
            os.chown(self.folder, int(run_as["user"]), int(run_as["group"]))  # type: ignore[call-overload]
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        if not data.exists():
            result = subprocess.run(
                [str(bin_dir / "initdb"), "-D", str(data), "-U", self.user, "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"],
                capture_output=True,
                env=env,
                cwd=self.folder,
                check=False,
                **run_as,  # type: ignore[arg-type]
            )
            if result.returncode != 0:
                msg = f"initdb failed with status {result.returncode}: {result.stderr.decode(errors='replace')[-2000:]}"
                raise ServiceError(msg)
        self.timescaledb = _timescaledb_installed(bin_dir)
        options = [
            "-c", "listen_addresses=127.0.0.1",
            "-c", f"port={self.port}",
            "-c", f"unix_socket_directories={self.folder}",
            "-c", "fsync=off",
            "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off",
            "-c", "max_connections=200",
            "-c", "timezone=UTC",
        ]  # fmt: skip
        if self.timescaledb:
            options += ["-c", "shared_preload_libraries=timescaledb", "-c", "timescaledb.telemetry_level=off"]
        self.process = subprocess.Popen(
            [str(bin_dir / "postgres"), "-D", str(data), *options],
            stdout=self._open_log(),
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.folder,
            start_new_session=True,
            **run_as,  # type: ignore[arg-type]
        )
        try:
            wait_for_port(self.port, timeout_s=30, process=self.process, what="PostgreSQL")
            self._create_database()
        except ServiceError as exc:
            self.stop()
            raise ServiceError(f"{exc}; log: {self.log_tail()}") from exc
        log.info("postgres_started", port=self.port, pid=self.pid, timescaledb=self.timescaledb)
        return self

    def _create_database(self) -> None:
        import psycopg

        deadline = time.monotonic() + 20
        while True:
            try:
                with psycopg.connect(f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres", autocommit=True, connect_timeout=2) as conn:
                    exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
                    if not exists:
                        conn.execute(f'CREATE DATABASE "{self.database}"')
                return
            except psycopg.OperationalError as exc:
                # The server accepts TCP before it accepts logins while it starts up.
                if time.monotonic() > deadline:
                    raise ServiceError(f"PostgreSQL on port {self.port} did not accept logins: {exc}") from exc
                time.sleep(0.1)



def _timescaledb_installed(bin_dir: Path) -> bool:
    """Return whether the timescaledb extension's library is installed for this PostgreSQL."""
    pg_config = bin_dir / "pg_config"
    lib_dir: str | None = None
    if pg_config.exists():
        result = subprocess.run([str(pg_config), "--pkglibdir"], capture_output=True, text=True, check=False)
        lib_dir = result.stdout.strip() or None
    if lib_dir is None:
        version = bin_dir.parent.name
        lib_dir = f"/usr/lib/postgresql/{version}/lib"
    return bool(glob.glob(f"{lib_dir}/timescaledb*.so"))
