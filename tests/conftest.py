"""Shared fixtures: a Realtime emulator, the runner on a local port, and a simulated caller."""

import asyncio
import contextlib
import os
import secrets
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pipecat_realtime_twilio.runner.app import create_app
from pipecat_realtime_twilio.runner.bots import Bot, load_bots
from pipecat_realtime_twilio.settings import Settings
from pipecat_realtime_twilio.testing.caller import TwilioCaller
from pipecat_realtime_twilio.testing.emulator import RealtimeEmulator
from pipecat_realtime_twilio.testing.server import (  # noqa: F401 (used by the tests)
    LocalServer,
    free_port,
    wait_for_port,
)

ROOT = Path(__file__).resolve().parent.parent
AUTH_TOKEN = secrets.token_hex(16)


# --- in parallel by default -------------------------------------------------------------------
#
# pyproject's addopts ask pytest-xdist for `--numprocesses=auto`, which means WORKERS here: most
# call tests wait on real-time audio rather than the CPU, so more workers than cores pay off
# (measured on 2 cores). The unit tier alone (`-m "not call"`) runs in this process: starting
# workers would cost more than its tests take. `-n 0` (or `-p no:xdist`) runs in one process.

WORKERS = 6


def pytest_addoption(parser, pluginmanager):
    """With xdist disabled (``-p no:xdist``), accept pyproject's xdist options and ignore them."""
    if not pluginmanager.has_plugin("xdist"):
        parser.addoption("--numprocesses", help="ignored: pytest-xdist is disabled")
        parser.addoption("--dist", help="ignored: pytest-xdist is disabled")


@pytest.hookimpl(optionalhook=True)  # an xdist hook: unknown with -p no:xdist
def pytest_xdist_auto_num_workers(config):
    """The workers of ``-n auto``: WORKERS, none for the unit tier alone."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # xdist's own hook reads it
    markexpr = config.getoption("markexpr")
    if markexpr:
        # pytest's own parser of -m (private: if it moves, run WORKERS; a bad expression is
        # for pytest to report).
        with contextlib.suppress(Exception):
            from _pytest.mark.expression import Expression

            if not Expression.compile(markexpr).evaluate(lambda name, **_: name == "call"):
                return 0  # no call test selected
    return WORKERS


# --- the unit tier stays in the process -------------------------------------------------------
#
# Tests marked `call` open real sockets, start servers or subprocesses; every other test is the
# unit tier (`pytest -m "not call"`), which must stay fast. So a unit test that tries to connect
# or listen on the network, or to start a process, fails at once, naming the marker it lacks.

NETWORK_FAMILIES = (socket.AF_INET, socket.AF_INET6)  # AF_UNIX stays free: asyncio's loop uses it


class UnitTierError(RuntimeError):
    """A test not marked ``call`` opened a network socket or started a process.

    Not an ``OSError``, so that code retrying or absorbing network errors does not hide it.
    """


_REPORTS = pytest.StashKey[dict]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item, for the guard's teardown."""
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


@pytest.fixture(autouse=True)
def unit_tier_guard(request, monkeypatch):
    """Unless the test is marked ``call``: no network connect, bind or listen, no subprocess."""
    if request.node.get_closest_marker("call") is not None:
        yield
        return
    refused: list[str] = []

    def refuse(what: str):
        message = (
            f"{request.node.nodeid} {what}, but it is not marked `call`: mark this test `call` "
            "(@pytest.mark.call, or pytestmark = pytest.mark.call for a whole module) "
            "if it needs real sockets, servers or subprocesses; unit tests stay in the process."
        )
        refused.append(message)
        raise UnitTierError(message)

    def network(name: str):
        original = getattr(socket.socket, name)

        def guarded(sock, *args):
            if sock.family in NETWORK_FAMILIES:
                refuse(f"tried socket.{name}({', '.join(map(repr, args))})")
            return original(sock, *args)

        monkeypatch.setattr(socket.socket, name, guarded)

    for name in ("connect", "connect_ex", "bind", "listen"):
        network(name)

    def no_process(popen, args=None, *_, **__):
        refuse(f"tried to start a process {args!r}")

    async def no_async_process(*args, **_):
        refuse(f"tried to start a process {args!r}")

    monkeypatch.setattr(subprocess.Popen, "__init__", no_process)
    monkeypatch.setattr(asyncio, "create_subprocess_exec", no_async_process)
    monkeypatch.setattr(asyncio, "create_subprocess_shell", no_async_process)
    yield
    call = request.node.stash.get(_REPORTS, {}).get("call")
    if refused and call is not None and call.passed:  # the error was caught and swallowed
        pytest.fail(refused[0], pytrace=False)


@pytest.fixture
async def emulator():
    async with RealtimeEmulator() as emulator:
        yield emulator


def runner_settings(emulator: RealtimeEmulator, public_url: str, **overrides) -> Settings:
    """Settings of a runner that talks to ``emulator``, ignoring the environment."""
    values = {
        "openai_api_key": "sk-test",
        "openai_realtime_url": emulator.url,
        "twilio_auth_token": AUTH_TOKEN,
        "public_url": public_url,
        "bots_dir": str(ROOT / "bots"),
        "bot": "default",
        "database_url": f"sqlite:///{tempfile.mkdtemp(prefix='calls-')}/calls.db",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture
async def runner(emulator):
    """The call runner serving the repository's bots on a local port, against the emulator."""
    server = LocalServer()
    settings = runner_settings(emulator, server.url)
    server.app = create_app(settings, load_bots(settings.bots_dir))
    async with server:
        yield server


@pytest.fixture
async def caller(runner):
    async with TwilioCaller(
        server_url=runner.url, public_url=runner.url, auth_token=AUTH_TOKEN
    ) as caller:
        yield caller


@contextlib.asynccontextmanager
async def phone_call(
    *,
    bot: str = "default",
    pipeline=None,
    settings: dict | None = None,
    **emulator_options,
):
    """A runner against a fresh emulator, and a caller that has not dialled yet.

    Args:
        bot: The repository bot that answers (ignored with ``pipeline``).
        pipeline: A bot builder ``pipeline(call)`` to answer with instead.
        settings: Settings overrides.
        **emulator_options: ``RealtimeEmulator`` arguments.

    Yields:
        (emulator, runner, caller): the ``RealtimeEmulator``, the ``CallRunner``
        and the ``TwilioCaller``.
    """
    async with RealtimeEmulator(**emulator_options) as emulator:
        server = LocalServer()
        if pipeline is not None:
            bot = "test"
        settings = runner_settings(emulator, server.url, bot=bot, **(settings or {}))
        bots = (
            {"test": Bot("test", "a test bot", pipeline)}
            if pipeline is not None
            else load_bots(settings.bots_dir)
        )
        server.app = create_app(settings, bots)
        async with server:
            async with TwilioCaller(
                server_url=server.url, public_url=server.url, auth_token=AUTH_TOKEN
            ) as caller:
                yield emulator, server.app.state.runner, caller


def clean_env(**values: str) -> dict[str, str]:
    """This environment without any of the runner's settings, plus ``values``."""
    from pipecat_realtime_twilio.settings import Settings

    names = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k not in names}
    env.update(values)
    return env


def serve_env(emulator, port: int, tmp_path, **values: str) -> dict[str, str]:
    """The environment of a ``serve`` subprocess on ``port`` that talks to ``emulator``."""
    settings = {
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_REALTIME_URL": emulator.url,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
        "PORT": str(port),
        "BOTS_DIR": str(ROOT / "bots"),
        "DATABASE_URL": f"sqlite:///{tmp_path}/calls.db",
    }
    return clean_env(**{**settings, **values})


async def bots_check(folder) -> tuple[int, str]:
    """Run ``pipecat-realtime-twilio bots check`` on a bots folder (no OpenAI key set).

    Returns:
        Its exit code and its output.
    """
    process = await spawn(
        "-m",
        "pipecat_realtime_twilio",
        "bots",
        "check",
        cwd=folder,
        env=clean_env(BOTS_DIR=str(folder)),
        capture=True,
    )
    out = (await process.communicate())[0].decode()
    return process.returncode, out


async def spawn(*args: str, cwd, env: dict[str, str], capture: bool = False):
    """Start ``python ARGS`` with this interpreter, output captured or discarded."""
    stream = asyncio.subprocess.PIPE if capture else asyncio.subprocess.DEVNULL
    return await asyncio.create_subprocess_exec(
        sys.executable, *args, cwd=cwd, env=env, stdout=stream, stderr=stream
    )


# --- a private PostgreSQL server --------------------------------------------------------------
#
# Call records also go to PostgreSQL (DATABASE_URL=postgresql+psycopg://...). Tests that need it
# get a throwaway cluster of Debian's `postgresql` package: one per xdist worker (session scope),
# started on a free port of 127.0.0.1 with its socket in its own temporary folder, no fsync, and
# a fresh database per test (`postgres_url`). Without PostgreSQL they are skipped, unless
# REQUIRE_POSTGRES=1 (.ci/run) makes that a failure.


class PostgresServer:
    """A PostgreSQL cluster in a temporary folder; `stop()` and `start()` for outages."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="prt-postgres-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.user = "prt"
        self._as_postgres: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            import pwd

            account = pwd.getpwnam("postgres")
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self._as_postgres = ["runuser", "-u", "postgres", "--"]
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            self.user,
            "--auth=trust",
            "--no-sync",
            "--no-instructions",
            "-E",
            "UTF8",
            "--locale=C",
        )

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of a database of this server."""
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-c port={self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        log = self.root / "server.log"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(log), "-o", options, "-w", "start")

    def stop(self) -> None:
        """Stop the server at once (open connections are cut)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def execute(self, sql: str) -> None:
        """Run a statement outside a transaction (CREATE DATABASE and the like)."""
        import psycopg

        with psycopg.connect(self.url().replace("+psycopg", ""), autocommit=True) as connection:
            connection.execute(sql)

    def close(self) -> None:
        """Stop the server if it runs and remove its folder."""
        import shutil

        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        command = [*self._as_postgres, str(self.bindir / program), *args]
        result = subprocess.run(command, cwd=self.root, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise subprocess.CalledProcessError(
                result.returncode, command, result.stdout, result.stderr
            )


def _postgres_bindir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if found:
        return found[-1].parent  # the newest version
    import shutil

    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server of this xdist worker, for the session."""
    required = os.environ.get("REQUIRE_POSTGRES") == "1"
    bindir = _postgres_bindir()
    problem = None
    if bindir is None:
        problem = "PostgreSQL is not installed (apt install postgresql)"
    else:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            problem = "psycopg is not installed (pip install -e '.[dev]')"
    if problem is not None:
        if required:
            pytest.fail(f"{problem}, and REQUIRE_POSTGRES=1", pytrace=False)
        pytest.skip(problem)
    server = PostgresServer(bindir)
    try:
        for attempt in range(3):
            try:
                server.start()
                break
            except subprocess.CalledProcessError:
                if attempt == 2:
                    raise
                server.port = free_port()  # another process took the port meanwhile
        yield server
    finally:
        server.close()


@pytest.fixture
def postgres_url(postgres):
    """The URL of a fresh, empty database on the worker's PostgreSQL server."""
    name = f"test_{secrets.token_hex(6)}"
    postgres.execute(f"CREATE DATABASE {name}")
    yield postgres.url(name)
    with contextlib.suppress(Exception):  # a test may leave the server stopped or broken
        postgres.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# --- a private Redis server -------------------------------------------------------------------
#
# Several instances share state through Redis (REDIS_URL). Tests that need it get Debian's
# `redis-server`: one per xdist worker (session scope), on a free port of 127.0.0.1, in its own
# temporary folder, without persistence; each test gets its own key prefix and database
# (`redis_url`, `redis_prefix`), flushed after it. Without redis-server they are skipped, unless
# REQUIRE_REDIS=1 (.ci/run) makes that a failure.


class RedisServer:
    """A redis-server in a temporary folder; `stop()` and `start()` for outages."""

    DATABASES = 16

    def __init__(self, binary: str):
        self.binary = binary
        self.root = Path(tempfile.mkdtemp(prefix="prt-redis-"))
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self._next_db = 0

    def url(self, db: int = 0) -> str:
        """The URL of database ``db`` of this server."""
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        import time

        import redis

        command = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.root),
            "--databases",
            str(self.DATABASES),
        ]
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 (the process keeps it)
        self.process = subprocess.Popen(command, cwd=self.root, stdout=log, stderr=log)
        log.close()
        client = redis.Redis.from_url(self.url(), socket_connect_timeout=0.5)
        try:
            for _ in range(100):
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited ({self.process.returncode})")
                with contextlib.suppress(redis.ConnectionError):
                    if client.ping():
                        return
                time.sleep(0.05)
            raise RuntimeError("redis-server did not answer within 5 s")
        finally:
            client.close()

    def stop(self) -> None:
        """Stop the server at once (open connections are cut)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def next_db(self) -> int:
        """A database number for the next test (they are reused, flushed in between)."""
        db = self._next_db
        self._next_db = (db + 1) % self.DATABASES
        return db

    def close(self) -> None:
        """Stop the server and remove its folder."""
        import shutil

        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server():
    """A Redis server of this xdist worker, for the session."""
    import shutil

    binary = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if binary is None:
        problem = "Redis is not installed (apt install redis-server)"
        if os.environ.get("REQUIRE_REDIS") == "1":
            pytest.fail(f"{problem}, and REQUIRE_REDIS=1", pytrace=False)
        pytest.skip(problem)
    server = RedisServer(binary)
    try:
        for attempt in range(3):
            try:
                server.start()
                break
            except RuntimeError:
                server.stop()
                if attempt == 2:
                    raise
                server.port = free_port()  # another process took the port meanwhile
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_url(redis_server):
    """The URL of a database of the worker's Redis server, empty, flushed after the test."""
    import redis

    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()  # a test before this one stopped it
    url = redis_server.url(redis_server.next_db())
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    client.flushdb()
    yield url
    with contextlib.suppress(Exception):  # a test may leave the server stopped
        client.flushdb()
    client.close()
