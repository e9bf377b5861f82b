"""A real, throw-away PostgreSQL server for the tests (never a mock).

`start_postgres(tmp_dir)` runs `initdb` and `pg_ctl start` in a fresh folder, on a free port of 127.0.0.1 with trust
authentication, creates a database and returns a `PgServer` whose `.dsn` psycopg connects to; `.stop()` (or leaving the
`with` block) stops it and checks that no server process is left.

Where the binaries come from, first that works:
1. the system's: `$RLAIF_PG_BINDIR`, `pg_ctl`/`initdb` on PATH, /usr/lib/postgresql/*/bin (newest first), /usr/pgsql-*/bin;
2. the ones bundled in the `pgserver` wheel (`pip install pgserver`), found without importing it and run by this same
   launcher, so both give the same TCP DSN and the same stop. (pgserver's own `get_server()` is not used: it listens on a
   unix socket only, and as root it chmods every parent folder of the data and of site-packages to o+rx.)
`RLAIF_TEST_PG=system` or `=pgserver` forces one of them (default `auto`).

PostgreSQL refuses to run as root. When the tests run as root, the server runs as an unprivileged OS user: `$RLAIF_PG_USER`,
else `postgres` when it exists, else `rlaifpg`, created here with useradd (or busybox adduser). Commands switch to it with
runuser, else setpriv, else su. The data folder is chowned to it; when that user cannot reach the given tmp_dir (pytest's
/tmp/pytest-of-root is 0700) a folder of its own is made under the system temp dir instead.

The `postgres_server` / `postgres_dsn` fixtures (session scope) skip with the reasons of every failed try when no server can
start; `RLAIF_PG_REQUIRED=1` turns that skip into a failure (for a CI that must run them). Register them in
tests/conftest.py with:

    from pg_support import postgres_dsn, postgres_server  # noqa: F401
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import importlib.util
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SUPERUSER = "rlaif"  # the database superuser (trust auth on 127.0.0.1: no password)
DATABASE = "rlaif_test"
FALLBACK_OS_USER = "rlaifpg"
_SERVER_BINARIES = ("initdb", "pg_ctl", "postgres")
# Test server settings: durability off (a test database is thrown away), TCP on loopback only.
_SERVER_SETTINGS = {"listen_addresses": "127.0.0.1", "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


class PgUnavailable(RuntimeError):
    """No PostgreSQL server could be started here; the message says why."""


# -- running commands, as an unprivileged user when we are root -------------------------------------------------------


@dataclass(frozen=True)
class _Runner:
    user: str | None  # None: run as ourselves (not root)
    how: str = "direct"  # direct | runuser | setpriv | su

    def argv(self, args: Sequence[str]) -> list[str]:
        args = [str(a) for a in args]
        if self.user is None or self.how == "direct":
            return args
        entry = pwd.getpwnam(self.user)
        if self.how == "runuser":
            return ["runuser", "-u", self.user, "--", *args]
        if self.how == "setpriv":
            return ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups", "--", *args]
        return ["su", "-s", "/bin/sh", self.user, "-c", "exec " + shlex.join(args)]

    def run(self, args: Sequence[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        # Files, not pipes: a postmaster that inherited a pipe would keep the call waiting.
        with tempfile.TemporaryFile("w+") as out:
            proc = subprocess.run(self.argv(args), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                  env=_clean_env(), timeout=timeout, check=False, text=True)
            out.seek(0)
            return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), "")

    def chown(self, path: Path) -> None:
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def can_write(self, path: Path) -> bool:
        return self.run(["test", "-w", str(path), "-a", "-x", str(path)], timeout=30).returncode == 0

    def can_run(self, binary: Path) -> bool:
        return self.run([str(binary), "--version"], timeout=30).returncode == 0


def _clean_env() -> dict[str, str]:
    """Our environment without PG* variables (a PGDATA, PGPORT or PGHOST of the caller must not steer the test server)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _ensure_os_user() -> str:
    wanted = os.environ.get("RLAIF_PG_USER")
    if wanted:
        if not _user_exists(wanted):
            raise PgUnavailable(f"RLAIF_PG_USER={wanted} is no user of this system")
        return wanted
    for name in ("postgres", FALLBACK_OS_USER):
        if _user_exists(name):
            return name
    tries = [["useradd", "--system", "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin", FALLBACK_OS_USER],
             ["adduser", "-S", "-D", "-H", FALLBACK_OS_USER]]  # busybox/Alpine
    errors = []
    for cmd in tries:
        if shutil.which(cmd[0]) is None:
            errors.append(f"no {cmd[0]}")
            continue
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if _user_exists(FALLBACK_OS_USER):  # created now, or by a parallel run (useradd exit 9)
            return FALLBACK_OS_USER
        errors.append(f"{cmd[0]}: {proc.stderr.strip() or proc.returncode}")
    raise PgUnavailable(f"running as root and no unprivileged user for PostgreSQL could be made ({'; '.join(errors)})")


def _runner() -> _Runner:
    if os.geteuid() != 0:
        return _Runner(None)
    user = _ensure_os_user()
    if pwd.getpwnam(user).pw_uid == 0:
        raise PgUnavailable(f"user {user} has uid 0; PostgreSQL will not run as root")
    errors = []
    for how in ("runuser", "setpriv", "su"):
        if shutil.which(how) is None:
            continue
        runner = _Runner(user, how)
        proc = runner.run(["id", "-u"], timeout=30)
        if proc.returncode == 0 and proc.stdout.strip() == str(pwd.getpwnam(user).pw_uid):
            return runner
        errors.append(f"{how}: {proc.stdout.strip()[-200:]}")
    raise PgUnavailable(f"cannot run commands as {user} (runuser, setpriv, su: {'; '.join(errors) or 'none installed'})")


# -- where the binaries are ------------------------------------------------------------------------------------------


def _has_server(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in _SERVER_BINARIES)


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path)) or (0,)


def system_bindirs() -> list[Path]:
    """Folders with initdb, pg_ctl and postgres of a system install, best first."""
    found: list[Path] = []
    if os.environ.get("RLAIF_PG_BINDIR"):
        found.append(Path(os.environ["RLAIF_PG_BINDIR"]))
    for name in ("pg_ctl", "initdb", "postgres"):
        exe = shutil.which(name)
        if exe:
            found.append(Path(exe).resolve().parent)  # /usr/local/bin/pg_ctl -> /usr/lib/postgresql/15/bin
            found.append(Path(exe).parent)
    for pattern in ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/usr/local/pgsql/bin", "/opt/homebrew/opt/postgresql@*/bin"):
        found.extend(Path(p) for p in sorted(glob.glob(pattern), key=_version_key, reverse=True))
    unique: dict[Path, Path] = {}  # the same install reached through symlinks counts once
    for path in found:
        if _has_server(path):
            unique.setdefault((path / "postgres").resolve(), path)
    return list(unique.values())


def pgserver_install() -> Path | None:
    """pgserver's bundled PostgreSQL (site-packages/pgserver/pginstall), located without importing pgserver."""
    try:
        spec = importlib.util.find_spec("pgserver")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    install = Path(next(iter(spec.submodule_search_locations))) / "pginstall"
    return install if _has_server(install / "bin") else None


def _copy_pgserver_install(install: Path, dest_root: Path) -> Path:
    """Copy pgserver's binaries where the unprivileged user can run them; the layout is kept because initdb and the
    client tools find their libpq through the RPATH $ORIGIN/../../../pgserver.libs."""
    package = install.parent
    shutil.copytree(install, dest_root / "pgserver" / "pginstall", ignore=shutil.ignore_patterns("include", "*.a"), symlinks=True)
    libs = package.parent / "pgserver.libs"
    if libs.is_dir():
        shutil.copytree(libs, dest_root / "pgserver.libs", symlinks=True)
    for folder in [dest_root / "pgserver", *(p for p in (dest_root / "pgserver").rglob("*") if p.is_dir())]:
        folder.chmod(0o755)
    return dest_root / "pgserver" / "pginstall" / "bin"


# -- the server ------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (a container's PID 1 may never reap an orphaned postmaster)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is `pid` (a postmaster's backends and background workers)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


@dataclass
class PgServer:
    """A running PostgreSQL server started by `start_postgres`."""

    backend: str  # "system" or "pgserver"
    version: str
    bindir: Path
    root: Path  # the folder of this server: data/, the log and (when short enough) the socket folder
    data_dir: Path
    socket_dir: Path
    log_path: Path
    port: int
    pid: int
    host: str = "127.0.0.1"
    user: str = SUPERUSER
    dbname: str = DATABASE
    start_seconds: float = 0.0
    stop_seconds: float | None = None
    keep_files: bool = False
    _runner: _Runner = field(default_factory=lambda: _Runner(None), repr=False)
    _remove: list[Path] = field(default_factory=list, repr=False)
    _stopped: bool = field(default=False, repr=False)

    @property
    def dsn(self) -> str:
        return self.dsn_for(self.dbname)

    def dsn_for(self, dbname: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """Create another database on this server (e.g. a clean one per test); returns its DSN."""
        _create_database(self, name)
        return self.dsn_for(name)

    def pg_ctl(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return self._runner.run([str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), *args], timeout=timeout)

    def is_running(self) -> bool:
        """pg_ctl status says so (exit 0; 3 means no server), or the postmaster is still alive."""
        if self.data_dir.exists() and self.pg_ctl("status", timeout=30).returncode == 0:
            return True
        return _pid_alive(self.pid)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Stop the server (fast shutdown, then immediate, then SIGKILL) and remove its files; idempotent. Raises when a
        server process is still alive afterwards."""
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        started = time.monotonic()
        children = child_pids(self.pid)
        try:
            if _pid_alive(self.pid):
                if self.pg_ctl("-m", "fast", "-w", "-t", "30", "stop", timeout=60).returncode != 0 and _pid_alive(self.pid):
                    self.pg_ctl("-m", "immediate", "-w", "-t", "30", "stop", timeout=60)
                _kill_and_wait(self.pid)
            left = [pid for pid in [self.pid, *children] if _pid_alive(pid)]
            for pid in left:  # backends outlive a killed postmaster only briefly; do not leave any
                _kill_and_wait(pid)
            left = [pid for pid in left if _pid_alive(pid)]
            if left:
                raise RuntimeError(f"PostgreSQL on port {self.port} left processes {left} alive")
        finally:
            self.stop_seconds = time.monotonic() - started
            if not self.keep_files:
                for path in self._remove:
                    shutil.rmtree(path, ignore_errors=True)

    def __enter__(self) -> PgServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _kill_and_wait(pid: int, grace: float = 10.0) -> None:
    deadline = time.monotonic() + grace
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _pid_alive(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + grace
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)


def _create_database(server: PgServer, name: str) -> None:
    createdb = server.bindir / "createdb"
    if os.access(createdb, os.X_OK):
        proc = server._runner.run([str(createdb), "-h", server.host, "-p", str(server.port), "-U", server.user, name], timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"createdb {name} failed: {proc.stdout.strip()}")
        return
    import psycopg  # no createdb next to the server: use the driver the tests use anyway
    from psycopg import sql

    with psycopg.connect(server.dsn_for("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _server_root(tmp_dir: Path, runner: _Runner) -> tuple[Path, list[Path]]:
    """A fresh folder the server's user owns; returns it and the folders to remove at stop."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="pg-", dir=tmp_dir))
    runner.chown(root)
    if runner.user is None or runner.can_write(root):
        return root, [root]
    shutil.rmtree(root, ignore_errors=True)  # e.g. /tmp/pytest-of-root is 0700: postgres cannot get in
    root = Path(tempfile.mkdtemp(prefix="rlaif-pg-"))
    runner.chown(root)
    if not runner.can_write(root):
        shutil.rmtree(root, ignore_errors=True)
        raise PgUnavailable(f"user {runner.user} cannot write in {tmp_dir} nor in {tempfile.gettempdir()}")
    return root, [root]


def _socket_dir(root: Path, runner: _Runner, remove: list[Path]) -> Path:
    """Unix socket paths are limited to 107 bytes: use root/s unless that is too long, then a short folder in /tmp."""
    sock = root / "s"
    if len(str(sock)) + len("/.s.PGSQL.65535.lock") > 100:
        sock = Path(tempfile.mkdtemp(prefix="pgs-", dir="/tmp" if Path("/tmp").is_dir() else None))
        remove.append(sock)
    sock.mkdir(exist_ok=True)
    runner.chown(sock)
    return sock


def _start_with(backend: str, bindir: Path, tmp_dir: Path, dbname: str, keep_files: bool) -> PgServer:
    started = time.monotonic()
    runner = _runner()
    root, remove = _server_root(tmp_dir, runner)
    try:
        if runner.user is not None and not runner.can_run(bindir / "postgres"):
            if backend != "pgserver":
                raise PgUnavailable(f"user {runner.user} cannot run {bindir / 'postgres'}")
            bindir = _copy_pgserver_install(bindir.parent, root / "bin")  # e.g. a venv under /root (0700)
            if not runner.can_run(bindir / "postgres"):
                raise PgUnavailable(f"user {runner.user} cannot run pgserver's postgres even from {bindir}")
        version = runner.run([str(bindir / "postgres"), "--version"], timeout=30).stdout.strip()
        data = root / "data"
        initdb = runner.run([str(bindir / "initdb"), "-D", str(data), "--auth=trust", "-U", SUPERUSER, "-E", "UTF8",
                             "--no-locale", "-N"], timeout=180)
        if initdb.returncode != 0:
            raise PgUnavailable(f"{backend} initdb ({bindir}) failed: {initdb.stdout.strip()[-1500:]}")
        sock = _socket_dir(root, runner, remove)
        log = root / "postgres.log"
        last = ""
        for _ in range(5):  # a free port can be taken between probing it and binding it: try another
            port = free_port()
            options = ["-p", str(port), "-k", str(sock)]
            for key, value in _SERVER_SETTINGS.items():
                options += ["-c", f"{key}={value}"]
            proc = runner.run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
                               "-o", shlex.join(options), "start"], timeout=120)
            if proc.returncode == 0:
                break
            last = f"{proc.stdout.strip()[-500:]}\n{_tail(log)}"
            if "could not bind" not in last and "already in use" not in last:
                raise PgUnavailable(f"{backend} pg_ctl start ({bindir}) failed: {last}")
        else:
            raise PgUnavailable(f"{backend} pg_ctl start failed on 5 ports: {last}")
        pid = int((data / "postmaster.pid").read_text().split()[0])
        server = PgServer(backend=backend, version=version, bindir=bindir, root=root, data_dir=data, socket_dir=sock, log_path=log,
                          port=port, pid=pid, dbname=dbname, keep_files=keep_files, _runner=runner, _remove=remove)
    except BaseException:
        _abandon(root, runner, bindir)
        for path in remove:
            shutil.rmtree(path, ignore_errors=True)
        raise
    atexit.register(server.stop)  # the safety net when a caller forgets stop(); the fixtures stop it themselves
    try:
        if dbname != "postgres":
            _create_database(server, dbname)
    except BaseException:
        server.stop()
        raise
    server.start_seconds = time.monotonic() - started
    return server


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _abandon(root: Path, runner: _Runner, bindir: Path) -> None:
    """After a failed start: make sure no half-started postmaster keeps running on the folder we are about to remove."""
    pidfile = root / "data" / "postmaster.pid"
    if pidfile.exists():
        with contextlib.suppress(Exception):
            runner.run([str(bindir / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "-w", "stop"], timeout=60)
        with contextlib.suppress(Exception):
            _kill_and_wait(int(pidfile.read_text().split()[0]), grace=5)


def start_postgres(tmp_dir: str | os.PathLike[str], dbname: str = DATABASE, keep_files: bool = False) -> PgServer:
    """Start a PostgreSQL server in a new folder under `tmp_dir`; raise PgUnavailable (with every try's reason) when none
    can start. Use it as a context manager or call `.stop()`."""
    choice = os.environ.get("RLAIF_TEST_PG", "auto").strip().lower() or "auto"
    if choice not in ("auto", "system", "pgserver"):
        raise PgUnavailable(f"RLAIF_TEST_PG={choice}: expected auto, system or pgserver")
    tries: list[tuple[str, Path]] = []
    reasons: list[str] = []
    if choice in ("auto", "system"):
        bindirs = system_bindirs()
        tries += [("system", b) for b in bindirs]
        if not bindirs:
            reasons.append("no system PostgreSQL (no initdb/pg_ctl/postgres on PATH nor in /usr/lib/postgresql/*/bin)")
    if choice in ("auto", "pgserver"):
        install = pgserver_install()
        if install is not None:
            tries.append(("pgserver", install / "bin"))
        else:
            reasons.append("pgserver is not installed (pip install pgserver)")
    for backend, bindir in tries:
        try:
            return _start_with(backend, bindir, Path(tmp_dir), dbname, keep_files)
        except (PgUnavailable, OSError, subprocess.SubprocessError) as exc:
            reasons.append(f"{backend} at {bindir}: {exc}")
    raise PgUnavailable("no PostgreSQL server could start: " + " | ".join(reasons))


@contextlib.contextmanager
def postgres(tmp_dir: str | os.PathLike[str], dbname: str = DATABASE) -> Iterator[PgServer]:
    """`with postgres(tmp) as server:` -- stopped on leaving the block, also after an exception."""
    server = start_postgres(tmp_dir, dbname)
    try:
        yield server
    finally:
        server.stop()


def start_or_skip(tmp_dir: str | os.PathLike[str], dbname: str = DATABASE) -> PgServer:
    """start_postgres, or pytest.skip with the reasons (pytest.fail instead when RLAIF_PG_REQUIRED=1)."""
    try:
        return start_postgres(tmp_dir, dbname)
    except PgUnavailable as exc:
        if os.environ.get("RLAIF_PG_REQUIRED", "") not in ("", "0"):
            pytest.fail(f"RLAIF_PG_REQUIRED is set but {exc}", pytrace=False)
        pytest.skip(str(exc))


# -- fixtures (import them into tests/conftest.py) -------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    """One real PostgreSQL server for the whole session; stopped at the end of the session whatever the tests did."""
    server = start_or_skip(tmp_path_factory.mktemp("postgres"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_dsn(postgres_server: PgServer) -> str:
    """DSN of the session's server, e.g. postgresql://rlaif@127.0.0.1:PORT/rlaif_test (trust auth, no password)."""
    return postgres_server.dsn
