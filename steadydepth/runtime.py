"""Embedded defaults: Prefect's temporary server and MLflow on SQLite, all under one project-local folder.

Call `use_embedded_defaults()` before importing prefect. Every variable is only set when the user has
not set it, so pointing at a real Prefect server or MLflow tracking server is just an environment variable.

`start_embedded_server()` then starts Prefect's temporary API server (when no API is configured) so that a
command killed with SIGKILL leaves nothing behind: a watchdog process (`python -m steadydepth.runtime`) stops the
server as soon as the command's process is gone, however it died. Before the server starts, its SQLite database is
brought to the current schema here, under a lock, so a half-applied migration (a full disk or a kill during the first
set-up) is found and repaired or reported in one line, instead of hanging every later command in Prefect's start-up
loop.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from steadydepth.errors import ConfigError

DEFAULT_HOME = ".steadydepth"
WATCH_INTERVAL_S = 0.5  # how often the watchdog looks for its command; also the longest a server outlives it
_watchdogs: list[subprocess.Popen] = []  # kept so the handles live as long as the command


def use_embedded_defaults(home: str | Path | None = None) -> Path:
    """Point Prefect and MLflow at files under `home` (default ./.steadydepth) unless already configured."""
    home = Path(home or os.environ.get("STEADYDEPTH_HOME", DEFAULT_HOME)).resolve()
    try:
        home.mkdir(parents=True, exist_ok=True)
        probe = home / ".write-test"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise ConfigError(
            f"cannot write the state folder {home} ({err.strerror}); set orchestration.home to a writable folder"
        ) from None
    os.environ.setdefault("STEADYDEPTH_HOME", str(home))
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    # The first ephemeral start runs the SQLite migrations: > 20 s on 2 loaded cores.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no phoning home from a laptop
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    os.environ.setdefault("STEADYDEPTH_ARTIFACT_ROOT", str(home / "mlartifacts"))
    return home


# ---- processes --------------------------------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (state first), None where there is no such file (not Linux, or no process)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces and parentheses


def process_token(pid: int | None = None) -> str:
    """When a process started (Linux: clock ticks since boot), '' where unknown. With the pid it tells the process
    from a later one that reuses its pid."""
    fields = _stat(pid or os.getpid())
    return fields[19] if fields else ""  # field 22, starttime


def process_host() -> str:
    """Where this process's pids mean something: the host name, plus the pid namespace where Linux says (two
    containers may share a host name, never a pid namespace)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")  # e.g. "pid:[4026531836]"
    except OSError:
        return socket.gethostname()
    return f"{socket.gethostname()}/{namespace.split('[')[-1].rstrip(']')}"


def process_alive(pid: int, token: str = "") -> bool:
    """Whether process `pid` runs (not a zombie) and, when `token` is given, is the one that had that token."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    fields = _stat(pid)
    if fields is None:
        return True  # no /proc to say more
    return fields[0] not in ("Z", "X") and (not token or fields[19] == token)


# ---- the Prefect server -------------------------------------------------------------------------------------------


def start_embedded_server() -> None:
    """Start Prefect's temporary API server now, with a watchdog that stops it when this process ends in any way;
    nothing when PREFECT_API_URL names a server. Its SQLite database is prepared first (`prepare_prefect_database`).
    Prefect's client later finds this same server (one instance per process)."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled:
        return
    database = _sqlite_file(settings.server.database.connection_url)
    if database is not None:
        prepare_prefect_database(database, timeout_s=settings.server.ephemeral.startup_timeout_seconds)
    _watched_server().start()


def _watched_server():
    """Prefect's temporary server, each of its processes watched from the moment it is spawned (a kill during the
    first start, which runs for tens of seconds, leaves nothing behind either). Prefect keeps one instance per
    process, which this subclass becomes, so Prefect's client later finds this same, running server."""
    from prefect.server.api.server import SubprocessASGIServer

    class WatchedServer(SubprocessASGIServer):
        def _run_uvicorn_command(self) -> subprocess.Popen:
            process = super()._run_uvicorn_command()
            _start_watchdog(process.pid)
            return process

    return WatchedServer()


def _sqlite_file(url: object) -> Path | None:
    """The file of a SQLite connection URL; None for another database or an in-memory one."""
    from sqlalchemy.engine import make_url

    if url is None:
        return None
    text = url.get_secret_value() if hasattr(url, "get_secret_value") else str(url)
    parsed = make_url(text)
    if not parsed.drivername.startswith("sqlite") or not parsed.database or "memory" in parsed.database:
        return None
    return Path(parsed.database)


def _start_watchdog(server_pid: int) -> None:
    _watchdogs.append(subprocess.Popen(
        [sys.executable, "-m", "steadydepth.runtime", str(os.getpid()), str(server_pid)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,  # never hold the output
    ))


def watch(command_pid: int, server_pid: int) -> None:
    """The watchdog: wait while `command_pid` (our parent) lives; once it is gone, stop `server_pid`. Returns early
    when the server exits first. Ctrl-C is the command's to handle, so it is ignored here."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    server = _pidfd(server_pid)
    while os.getppid() == command_pid:
        if server is not None:
            if select.select([server], [], [], WATCH_INTERVAL_S)[0]:
                return  # the server exited on its own
        else:
            if not process_alive(server_pid):
                return
            time.sleep(WATCH_INTERVAL_S)
    _stop(server_pid, server)


def _pidfd(pid: int) -> int | None:
    """A pidfd of `pid` (Linux ≥ 5.3): signals through it can never reach a later process that reuses the pid."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _stop(pid: int, pidfd: int | None, grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `grace_s` if the process is still there."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 0.0)):
        try:
            if pidfd is not None:
                signal.pidfd_send_signal(pidfd, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not process_alive(pid):
                return
            time.sleep(0.1)


# ---- the Prefect database -----------------------------------------------------------------------------------------


def prepare_prefect_database(path: Path, timeout_s: float = 300) -> None:
    """Bring Prefect's SQLite database at `path` to this Prefect's schema before its server starts.

    Runs `prefect server database upgrade` (in a child process, with a timeout) whenever the database is not at the
    current revision, under a lock so two commands never migrate one file at once. When the upgrade fails (migrations
    half applied, e.g. by a full disk or a kill during the first set-up): a database without flow runs is moved aside
    (`<file>.broken-<UTC time>`) and a fresh one made; one holding flow runs stops the command with one line naming
    the file and what to do (ConfigError).
    """
    from storage.writing import exclusive_write

    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_write(str(path), "the Prefect database is being set up", wait=True) as lock:
        if path.is_file() and _revision(path) == _current_revision():
            return
        failure = _upgrade(timeout_s, lock)
        if failure is None:
            return
        runs = _flow_runs(path)
        if runs != 0:
            held = "cannot be read" if runs is None else f"holds {runs} flow run(s)"
            raise ConfigError(
                f"the Prefect database {path} cannot be brought to this Prefect's schema ({failure}) and {held}; "
                f"move it aside (mv {path} {path}.broken) to start afresh, or restore a backup of it"
            )
        aside = _move_aside(path)
        print(f"the Prefect database {path} was half set up ({failure}) and held no flow runs; moved it to {aside} "
              "and making a fresh one", file=sys.stderr)
        failure = _upgrade(timeout_s, lock)
        if failure is not None:
            raise ConfigError(f"cannot set up the Prefect database {path} ({failure}); check the folder has space")


def _current_revision() -> str | None:
    """The newest migration of the installed Prefect's SQLite schema."""
    from alembic.script import ScriptDirectory
    from prefect.server.database import provide_database_interface
    from prefect.server.database.alembic_commands import alembic_config

    config = alembic_config()
    config.set_main_option("version_locations", str(provide_database_interface().orm.versions_dir))
    return ScriptDirectory.from_config(config).get_current_head()


def _query(path: Path, sql: str) -> list[tuple] | None:
    """Rows of a read-only query; None when the file cannot be read as SQLite or lacks the table."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            return db.execute(sql).fetchall()
    except sqlite3.Error:
        return None


def _revision(path: Path) -> str | None:
    rows = _query(path, "SELECT version_num FROM alembic_version")
    return rows[0][0] if rows else None


def _flow_runs(path: Path) -> int | None:
    """How many flow runs the database holds: 0 when it has no such table yet, None when it cannot be read."""
    if _query(path, "SELECT name FROM sqlite_master") is None:
        return None
    rows = _query(path, "SELECT count(*) FROM flow_run")
    return 0 if rows is None else int(rows[0][0])


def _upgrade(timeout_s: float, lock: int | None) -> str | None:
    """Run Prefect's own migration command; None on success, else the line saying why it failed. The child holds the
    database's lock too, so a migration outliving a killed command still keeps others off the file."""
    command = [sys.executable, "-m", "prefect", "server", "database", "upgrade", "--yes"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                              pass_fds=() if lock is None else (lock,))
    except subprocess.TimeoutExpired:
        return f"the migration did not finish within {timeout_s:g} s"
    if done.returncode == 0:
        return None
    lines = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if "Error:" in line]
    last = (errors or lines or [f"exit status {done.returncode}"])[-1]
    # "sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) duplicate column ..." -> "duplicate column ..."
    return re.sub(r"^([\w.]+Error: )?(\([\w.]+\) )?", "", last)


def _move_aside(path: Path) -> Path:
    """Rename the database and its journal files to `<name>.broken-<UTC time>*`; returns the new database path."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.broken-{stamp}")
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")
    return aside


if __name__ == "__main__":  # the watchdog: python -m steadydepth.runtime COMMAND_PID SERVER_PID
    watch(int(sys.argv[1]), int(sys.argv[2]))
