"""Throwaway Redis and PostgreSQL servers for the Skygate test suite.

This module owns the lifecycle of the real servers the tests talk to: it finds the
binaries, starts each server on a free 127.0.0.1 port in its own process group,
waits until it answers, stops it by PID (never by process name), and removes its
temporary directory. Redis can also be frozen (SIGSTOP) and thawed (SIGCONT) to
simulate a hung server. An ``atexit`` hook stops every server still running when
the interpreter exits, so a crashed test session does not leak processes.

When running as root (as on CI), PostgreSQL's ``initdb`` and ``postgres`` are run
as the unprivileged ``postgres`` user via ``runuser``, in a data directory that user
owns.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

__all__ = ["PostgresServer", "RedisServer", "free_port", "stop_group"]

HOST = "127.0.0.1"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
_POLL_INTERVAL = 0.02
_DB_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


# --------------------------------------------------------------------------- helpers


class _Closable(Protocol):
    def close(self) -> None: ...


_LIVE: set[_Closable] = set()


def _close_all_live() -> None:
    """``atexit`` safety net: close every server that is still registered."""
    for server in list(_LIVE):
        try:
            server.close()
        except Exception:
            pass


atexit.register(_close_all_live)


def _is_root() -> bool:
    return os.geteuid() == 0


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return True
    return fields[0] != "Z"


def _wait_pid_gone(pid: int, timeout: float) -> bool:
    """Poll until ``pid`` is gone; return whether it went within ``timeout``."""
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_INTERVAL)
    return True


def _log_tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file, or a note that it is unreadable."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"<no log at {path}: {exc}>"


def _redis_command(port: int, command: bytes, timeout: float) -> bytes:
    """Send one inline command to Redis and return the first reply line."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(command + b"\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
        return reply.strip()


# --------------------------------------------------------------------------- Redis


def _find_redis_server() -> str:
    """Path of the ``redis-server`` binary, or a RuntimeError naming the package."""
    path = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None
    )
    if path is None:
        raise RuntimeError(
            "redis-server not found; install the Debian package: apt-get install -y redis-server"
        )
    return path


class RedisServer:
    """A private redis-server on 127.0.0.1 with a fixed port across restarts."""

    def __init__(self, base_dir: str | os.PathLike[str]) -> None:
        self._binary = _find_redis_server()
        self._dir = Path(tempfile.mkdtemp(prefix="redis-", dir=base_dir))
        self.port: int = free_port()
        self.url: str = f"redis://{HOST}:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None
        self._frozen = False

    @property
    def log_path(self) -> Path:
        return self._dir / "redis.log"

    @property
    def running(self) -> bool:
        """Whether the server process is alive (it may be frozen)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def frozen(self) -> bool:
        """Whether the server has been SIGSTOPped by :meth:`freeze`."""
        return self.running and self._frozen

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    def start(self) -> None:
        """Launch redis-server and wait until it answers PING."""
        if self.running:
            return
        self._frozen = False
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._dir,
                start_new_session=True,
            )
        _LIVE.add(self)
        self._wait_ready()

    def _command(self) -> list[str]:
        return [
            self._binary,
            "--port", str(self.port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self._dir),
            "--daemonize", "no",
        ]  # fmt: skip

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not self.ping(timeout=0.5):
            if not self.running:
                tail = _log_tail(self.log_path)
                raise RuntimeError(f"redis-server exited during startup:\n{tail}")
            if time.monotonic() >= deadline:
                self.stop()
                raise RuntimeError(
                    f"redis-server did not answer PING within {START_TIMEOUT}s:\n"
                    f"{_log_tail(self.log_path)}"
                )
            time.sleep(_POLL_INTERVAL)

    def ping(self, timeout: float = 1.0) -> bool:
        """Whether the server answers PING within ``timeout`` seconds."""
        try:
            return _redis_command(self.port, b"PING", timeout) == b"+PONG"
        except OSError:
            return False

    def flushall(self) -> None:
        """Delete every key in every database."""
        reply = _redis_command(self.port, b"FLUSHALL", timeout=5.0)
        if reply != b"+OK":
            raise RuntimeError(f"FLUSHALL failed: {reply!r}")

    def freeze(self) -> None:
        """SIGSTOP the server: it keeps accepting connections but never answers."""
        if self._proc is None or not self.running:
            raise RuntimeError("cannot freeze a redis-server that is not running")
        os.kill(self._proc.pid, signal.SIGSTOP)
        self._frozen = True

    def thaw(self) -> None:
        """SIGCONT a frozen server."""
        if self._proc is not None and self.running:
            os.kill(self._proc.pid, signal.SIGCONT)
        self._frozen = False

    def stop(self) -> None:
        """SIGTERM the server and wait; SIGKILL its process group after a timeout."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self.thaw()
            proc.terminate()
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                _killpg(proc.pid)
                proc.wait(timeout=STOP_TIMEOUT)
        self._proc = None
        self._frozen = False

    def ensure_running(self) -> None:
        """Thaw the server if frozen and (re)start it if stopped."""
        if self.frozen:
            self.thaw()
        if not self.running:
            self.start()

    def close(self) -> None:
        """Thaw, stop, and remove the temporary directory."""
        try:
            self.stop()
        finally:
            _LIVE.discard(self)
            shutil.rmtree(self._dir, ignore_errors=True)


def _killpg(pgid: int) -> None:
    """SIGKILL a process group we created, ignoring one that is already gone."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# --------------------------------------------------------------------------- PostgreSQL

_PG_MISSING = (
    "PostgreSQL server binaries (initdb, pg_ctl, psql) not found; "
    "install the Debian package: apt-get install -y postgresql"
)


def _pg_bindir_from_pg_config() -> Path | None:
    try:
        out = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(out) if out else None


def _pg_version_key(bindir: str) -> tuple[int, ...]:
    version = Path(bindir).parent.name
    return tuple(int(part) for part in re.findall(r"\d+", version))


def _find_pg_bindir() -> Path:
    """Directory holding initdb/pg_ctl/psql: ``pg_config --bindir``, else the newest Debian one."""
    candidates: list[Path] = []
    from_pg_config = _pg_bindir_from_pg_config()
    if from_pg_config is not None:
        candidates.append(from_pg_config)
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_pg_version_key, reverse=True)
    candidates.extend(Path(d) for d in debian)
    for bindir in candidates:
        if all((bindir / exe).is_file() for exe in ("initdb", "pg_ctl", "postgres", "psql")):
            return bindir
    raise RuntimeError(_PG_MISSING)


def _postgres_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError(
            "running as root but there is no 'postgres' user; "
            "install the Debian package: apt-get install -y postgresql"
        ) from None


def _traversable_by_others(path: Path) -> bool:
    """Whether every directory from ``/`` down to ``path`` has the other-execute bit."""
    resolved = path.resolve()
    return all(os.stat(p).st_mode & stat.S_IXOTH for p in [resolved, *resolved.parents])


class PostgresServer:
    """A throwaway PostgreSQL cluster on 127.0.0.1 with a fixed port across restarts."""

    def __init__(self, base_dir: str | os.PathLike[str]) -> None:
        self._bindir = _find_pg_bindir()
        self._as_root = _is_root()
        if self._as_root and shutil.which("runuser") is None:
            raise RuntimeError(
                "running as root but 'runuser' is missing (Debian package util-linux)"
            )
        self._pg_user = _postgres_user() if self._as_root else None
        self._root = self._make_root(Path(base_dir))
        self.port: int = free_port()
        self._initialized = False
        self._pid: int | None = None

    def _make_root(self, base_dir: Path) -> Path:
        """Create the private directory; as root, one the postgres user can reach and owns."""
        if self._pg_user is None:
            return Path(tempfile.mkdtemp(prefix="postgres-", dir=base_dir))
        parent = base_dir if _traversable_by_others(base_dir) else Path("/tmp")
        root = Path(tempfile.mkdtemp(prefix="skygate-pg-", dir=parent))
        os.chmod(root, 0o755)
        os.chown(root, self._pg_user.pw_uid, self._pg_user.pw_gid)
        return root

    @property
    def data_dir(self) -> Path:
        return self._root / "data"

    @property
    def log_path(self) -> Path:
        return self._root / "postgres.log"

    @property
    def running(self) -> bool:
        """Whether the postmaster we started is alive."""
        return self._pid is not None and _pid_alive(self._pid)

    def database_url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of ``database`` on this server."""
        return f"postgresql+asyncpg://postgres@{HOST}:{self.port}/{database}"

    def _run(self, args: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run a server-side command, as the postgres user when we are root."""
        prefix = ["runuser", "-u", "postgres", "--"] if self._as_root else []
        return subprocess.run(
            prefix + args,
            cwd=self._root,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
        )

    def _initdb(self) -> None:
        result = self._run([
            str(self._bindir / "initdb"),
            "-D", str(self.data_dir),
            "-A", "trust",
            "-U", "postgres",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ])  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{result.stdout}\n{result.stderr}")
        self._initialized = True

    def _server_options(self) -> str:
        return shlex.join([
            "-p", str(self.port),
            "-k", str(self.data_dir),
            "-c", f"listen_addresses={HOST}",
            "-c", "fsync=off",
            "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off",
        ])  # fmt: skip

    def start(self) -> None:
        """initdb on first use, then ``pg_ctl start -w``."""
        if self.running:
            return
        if not self._initialized:
            self._initdb()
        _LIVE.add(self)
        result = self._run([
            str(self._bindir / "pg_ctl"),
            "-D", str(self.data_dir),
            "-l", str(self.log_path),
            "-o", self._server_options(),
            "-w", "-t", str(int(START_TIMEOUT)),
            "start",
        ])  # fmt: skip
        self._pid = self._read_postmaster_pid()
        if result.returncode != 0 or not self.running:
            self.stop()
            raise RuntimeError(
                f"pg_ctl start failed:\n{result.stdout}\n{result.stderr}\n"
                f"{_log_tail(self.log_path)}"
            )

    def _read_postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        """``pg_ctl stop -m fast -w``; if that fails, kill the postmaster by PID."""
        pid = self._pid or self._read_postmaster_pid()
        if pid is None or not _pid_alive(pid):
            self._pid = None
            return
        try:
            self._run(
                [str(self._bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w",
                 "-t", str(int(STOP_TIMEOUT)), "stop"],
                timeout=STOP_TIMEOUT + 5,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            pass
        if not _wait_pid_gone(pid, STOP_TIMEOUT):
            _kill_pid(pid, signal.SIGQUIT)
            if not _wait_pid_gone(pid, STOP_TIMEOUT):
                _kill_pid(pid, signal.SIGKILL)
                _wait_pid_gone(pid, STOP_TIMEOUT)
        self._pid = None

    def ensure_running(self) -> None:
        """(Re)start the server if it is not running."""
        if not self.running:
            self.start()

    def _psql(self, sql: str) -> None:
        """Run one SQL statement in the ``postgres`` database over TCP."""
        result = subprocess.run(
            [str(self._bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
             "-h", HOST, "-p", str(self.port), "-U", "postgres", "-d", "postgres", "-c", sql],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"psql failed for {sql!r}:\n{result.stderr}")

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return its SQLAlchemy URL."""
        self._psql(f'CREATE DATABASE "{_check_db_name(name)}"')
        return self.database_url(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name``, disconnecting its clients (``WITH (FORCE)``)."""
        self._psql(f'DROP DATABASE IF EXISTS "{_check_db_name(name)}" WITH (FORCE)')

    def close(self) -> None:
        """Stop the server and remove its data directory."""
        try:
            self.stop()
        finally:
            _LIVE.discard(self)
            shutil.rmtree(self._root, ignore_errors=True)


def _check_db_name(name: str) -> str:
    if not _DB_NAME_RE.match(name):
        raise ValueError(f"invalid database name {name!r}: use [a-z_][a-z0-9_]*, at most 63 chars")
    return name


def _kill_pid(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def stop_group(proc: subprocess.Popen[Any]) -> None:
    """Stop a process started in its own group: SIGTERM, 15 s to exit, then SIGKILL
    for whatever is left of its group (children included)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(5)
