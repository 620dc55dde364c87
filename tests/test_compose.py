"""deploy/compose: the stack's files checked as text, then the stack itself run with Docker.

The checks of the compose file and the Caddyfile need no engine; each must fail on a bad variant.
The stack test (marked ``call``) runs ``docker-compose up -d`` with the images
``deploy/docker-up`` builds (PostgreSQL, Redis, three runners, Caddy with its internal CA for
``localhost``), places a simulated call through Caddy's TLS, finds its record in the stack's
PostgreSQL, then stops a runner in the middle of a call: the call goes on while the runner
drains, and the container exits 0. It is skipped without a Docker engine or the images, and
fails instead when ``REQUIRE_DOCKER=1``.
"""

import asyncio
import contextlib
import copy
import functools
import os
import re
import secrets
import shutil
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import aiohttp.connector
import pytest
import yaml

from pipecat_realtime_twilio.testing.caller import TwilioCaller
from pipecat_realtime_twilio.testing.emulator import RealtimeEmulator
from pipecat_realtime_twilio.testing.server import free_port
from pipecat_realtime_twilio.testing.sounds import silence, tone

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
CADDYFILE = COMPOSE_DIR / "Caddyfile"
IMAGES = ["postgres:15", "redis:7", "caddy:2", "pipecat-realtime-twilio:latest"]
CADDY_ROOT = "/data/caddy/pki/authorities/local/root.crt"  # its internal CA's root
RUNNER = re.compile(r"runner\d+")
DRAIN_MARGIN_SECS = 5  # the runner exits within DRAIN_TIMEOUT_SECS and ~2 s
LOAD_BALANCED = ["/incoming", "/stream-ended", "/stream-status", "/campaign-amd", "/console"]

Compose = dict
Check = Callable[[Compose, str], list[str]]


# --- the files, checked as text ----------------------------------------------------------


def load_compose(text: str) -> Compose:
    """The compose file as data (YAML anchors and merge keys resolved)."""
    return yaml.safe_load(text)


def seconds(value: str | int) -> float:
    """A compose duration (``75s``, ``1m30s``, ``90``) in seconds."""
    if isinstance(value, int | float):
        return float(value)
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|m|s|ms|us)?", value)
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "": 1}
    return sum(float(number) * scale[unit] for number, unit in parts)


def runners(compose: Compose) -> dict[str, dict]:
    """The runner services, by name."""
    return {name: s for name, s in compose["services"].items() if RUNNER.fullmatch(name)}


def check_runners(compose: Compose, caddyfile: str) -> list[str]:
    """Each runner: its own INSTANCE_ID and STREAM_URL, the shared stores, its own volume."""
    problems = []
    found = runners(compose)
    if len(found) < 2:
        problems.append(f"{len(found)} runner services: several are the point")
    volumes = set()
    for name, service in found.items():
        env = service.get("environment", {})
        if env.get("INSTANCE_ID") != name:
            problems.append(f"{name}: INSTANCE_ID is {env.get('INSTANCE_ID')!r}")
        if env.get("STREAM_URL") != f"https://${{DOMAIN}}/r/{name}":
            problems.append(f"{name}: STREAM_URL is {env.get('STREAM_URL')!r}")
        if not str(env.get("DATABASE_URL", "")).startswith("postgresql+psycopg://"):
            problems.append(f"{name}: DATABASE_URL is not PostgreSQL through psycopg")
        if env.get("REDIS_URL") != "redis://redis:6379/0":
            problems.append(f"{name}: REDIS_URL is {env.get('REDIS_URL')!r}")
        data = [v for v in service.get("volumes", []) if v.endswith(":/data")]
        if len(data) != 1 or data[0] in volumes:
            problems.append(f"{name}: /data is not a volume of its own: {data}")
        volumes.update(data)
    return problems


def check_grace(compose: Compose, caddyfile: str) -> list[str]:
    """Docker waits longer than the drain before SIGKILL."""
    problems = []
    for name, service in runners(compose).items():
        drain = float(service.get("environment", {}).get("DRAIN_TIMEOUT_SECS", 60))
        grace = seconds(service.get("stop_grace_period", 10))
        if grace < drain + DRAIN_MARGIN_SECS:
            problems.append(f"{name}: stop_grace_period {grace:g} s < drain {drain:g} s + margin")
    return problems


def check_health(compose: Compose, caddyfile: str) -> list[str]:
    """Runners are healthy when /readyz says so; the stores have their own checks."""
    problems = []
    for name, service in runners(compose).items():
        test = " ".join(service.get("healthcheck", {}).get("test", []))
        if "http://127.0.0.1:8080/readyz" not in test:
            problems.append(f"{name}: the healthcheck does not ask /readyz: {test!r}")
        conditions = service.get("depends_on", {})
        for store in ("postgres", "redis"):
            if not isinstance(conditions, dict) or conditions.get(store, {}).get("condition") != (
                "service_healthy"
            ):
                problems.append(f"{name}: does not wait for {store} to be healthy")
    for store, word in (("postgres", "pg_isready"), ("redis", "redis-cli")):
        test = compose["services"].get(store, {}).get("healthcheck", {}).get("test", [])
        if word not in test:
            problems.append(f"{store}: no {word} healthcheck")
    return problems


def _site_blocks(caddyfile: str) -> dict[str, str]:
    """``handle_path``/``handle`` blocks of the Caddyfile by their first line (one level)."""
    blocks = {}
    for match in re.finditer(r"^\t(handle\S*[^\n{]*)\{\n(.*?)^\t\}", caddyfile, re.M | re.S):
        blocks[match.group(1).strip()] = match.group(2)
    return blocks


def check_caddy_routes(compose: Compose, caddyfile: str) -> list[str]:
    """Caddy: each runner's own prefix (its streams only), the balanced paths, no /metrics."""
    problems = []
    blocks = _site_blocks(caddyfile)
    names = sorted(runners(compose))
    for name in names:
        block = blocks.get(f"handle_path /r/{name}/*", "")
        if f"reverse_proxy {name}:8080" not in block:
            problems.append(f"/r/{name}/* is not routed to {name} alone")
        only_streams = "@not_stream not path /media-stream" in block
        if not only_streams or "respond @not_stream 404" not in block:
            problems.append(f"/r/{name}/* serves more than its media streams")
    pool = re.search(r"reverse_proxy ((?:runner\d+:8080 ?)+)\{(.*?)\n\t\}", caddyfile, re.S)
    if pool is None:
        return [*problems, "no load-balanced pool of runners"]
    if sorted(u.split(":")[0] for u in pool.group(1).split()) != names:
        problems.append(f"the pool {pool.group(1).split()} is not every runner {names}")
    for option in ("health_uri /readyz", "lb_try_duration"):
        if option not in pool.group(2):
            problems.append(f"the pool has no {option}")
    balanced = re.search(r"@balanced path ([^\n]+)", caddyfile)
    paths = balanced.group(1).split() if balanced else []
    problems += [f"{p} is not load-balanced" for p in LOAD_BALANCED if p not in paths]
    if "/metrics" in paths or "/*" in paths:
        problems.append("/metrics is public")
    return problems


CHECKS: list[Check] = [check_runners, check_grace, check_health, check_caddy_routes]


def _compose_variant(change: Callable[[Compose], None]) -> Compose:
    compose = copy.deepcopy(load_compose(COMPOSE_FILE.read_text()))
    change(compose)
    return compose


def _set(service: str, *path: str, value: object) -> Callable[[Compose], None]:
    def change(compose: Compose) -> None:
        node = compose["services"][service]
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return change


def _caddy_variant(old: str, new: str) -> str:
    text = CADDYFILE.read_text()
    assert old in text
    return text.replace(old, new, 1)


BAD_COMPOSE = [
    (check_runners, _set("runner2", "environment", "INSTANCE_ID", value="runner1")),
    (check_runners, _set("runner3", "environment", "STREAM_URL", value="https://${DOMAIN}")),
    (check_runners, _set("runner1", "environment", "DATABASE_URL", value="sqlite:///calls.db")),
    (check_runners, _set("runner2", "volumes", value=["runner1-data:/data"])),
    (check_grace, _set("runner1", "stop_grace_period", value="60s")),
    (check_grace, _set("runner2", "environment", "DRAIN_TIMEOUT_SECS", value="120")),
    (check_health, _set("runner3", "healthcheck", "test", value=["CMD", "true"])),
    (check_health, _set("runner1", "depends_on", value=["postgres", "redis"])),
    (check_health, _set("postgres", "healthcheck", value={})),
]
BAD_CADDYFILE = [
    (check_caddy_routes, _caddy_variant("reverse_proxy runner2:8080\n", "reverse_proxy x:80\n")),
    (check_caddy_routes, _caddy_variant("\t\trespond @not_stream 404\n", "")),
    (check_caddy_routes, _caddy_variant("not path /media-stream", "not path /metrics")),
    (check_caddy_routes, _caddy_variant("runner2:8080 runner3:8080 {", "runner2:8080 {")),
    (check_caddy_routes, _caddy_variant("health_uri /readyz", "health_uri /healthz")),
    (check_caddy_routes, _caddy_variant(" /stream-status ", " ")),
    (check_caddy_routes, _caddy_variant("@balanced path ", "@balanced path /metrics ")),
]


def test_compose_file_and_caddyfile_pass_every_check() -> None:
    compose = load_compose(COMPOSE_FILE.read_text())
    caddyfile = CADDYFILE.read_text()
    assert {check.__name__: check(compose, caddyfile) for check in CHECKS} == {
        check.__name__: [] for check in CHECKS
    }


@pytest.mark.parametrize(("check", "change"), BAD_COMPOSE)
def test_compose_check_catches_a_bad_variant(check: Check, change) -> None:
    assert check(_compose_variant(change), CADDYFILE.read_text()) != []


@pytest.mark.parametrize(("check", "caddyfile"), BAD_CADDYFILE)
def test_caddyfile_check_catches_a_bad_variant(check: Check, caddyfile: str) -> None:
    assert check(load_compose(COMPOSE_FILE.read_text()), caddyfile) != []


def test_every_check_has_a_bad_variant() -> None:
    assert {check for check, _ in BAD_COMPOSE + BAD_CADDYFILE} == set(CHECKS)


def test_env_example_names_what_the_compose_file_requires() -> None:
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE_FILE.read_text()))
    example = (COMPOSE_DIR / ".env.example").read_text()
    assert required == {"DOMAIN", "POSTGRES_PASSWORD"}
    assert all(re.search(rf"^{name}=", example, re.M) for name in required)


# --- the stack, run ----------------------------------------------------------------------


def _docker_problem() -> str | None:
    """Why the stack cannot run here, or None."""
    if shutil.which("docker") is None or shutil.which("docker-compose") is None:
        return "docker or docker-compose is not installed"
    return None


async def run(*args: str, check: bool = True, timeout: float = 300) -> tuple[int, str]:
    """Run a command; its exit code and output (stdout and stderr together)."""
    process = await asyncio.create_subprocess_exec(
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=COMPOSE_DIR,
    )
    try:
        out = (await asyncio.wait_for(process.communicate(), timeout))[0].decode()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"{args} did not finish within {timeout} s") from None
    if check and process.returncode != 0:
        raise AssertionError(f"{args} exited {process.returncode}:\n{out[-3000:]}")
    return process.returncode or 0, out


async def wait_for(what: str, probe: Callable[[], object], timeout: float) -> None:
    """Await ``probe()`` every half second until it is true."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        await asyncio.sleep(0.5)


class Stack:
    """A compose project of deploy/compose, with its own name, ports and .env."""

    def __init__(self, env_file: Path, https_port: int, token: str, api_key: str):
        self.project = f"prt{os.getpid()}{secrets.token_hex(3)}"
        self.env_file = env_file
        self.https_port = https_port
        self.token = token
        self.api_key = api_key
        self.origin = f"https://localhost:{https_port}"

    async def compose(self, *args: str, check: bool = True, timeout: float = 300):
        """``docker-compose`` on this project."""
        base = ["docker-compose", "-p", self.project, "--env-file", str(self.env_file)]
        return await run(*base, *args, check=check, timeout=timeout)

    async def container(self, service: str) -> str:
        """The container id of a service."""
        return (await self.compose("ps", "-q", service))[1].strip()

    async def health(self, service: str) -> str:
        """The container's health status (``starting``, ``healthy``...)."""
        _, out = await run(
            "docker", "inspect", "-f", "{{.State.Health.Status}}", await self.container(service)
        )
        return out.strip()

    async def sql(self, query: str) -> str:
        """One query on the stack's PostgreSQL, its rows as text."""
        args = ["exec", "-T", "postgres", "psql", "-U", "prt", "-d", "calls", "-tA", "-c", query]
        return (await self.compose(*args))[1].strip()

    async def readyz(self, service: str) -> int:
        """The HTTP status of a runner's ``/readyz``, asked on the compose network (not public)."""
        script = (
            "import urllib.request, urllib.error\n"
            "try:\n"
            "    print(urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=3).status)\n"
            "except urllib.error.HTTPError as e:\n"
            "    print(e.code)\n"
        )
        code, out = await self.compose("exec", "-T", service, "python", "-c", script, check=False)
        return int(out.strip()) if code == 0 and out.strip().isdigit() else 0

    async def get(self, path: str, **headers: str) -> int:
        """The HTTP status of a GET through Caddy (TLS checked with the trusted root)."""
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(self.origin + path, headers=headers) as response:
                    return response.status
        except aiohttp.ClientError:
            return 0


@pytest.fixture
async def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stack]:
    """The stack up and healthy, trusting Caddy's internal root; down (-v) afterwards."""
    problem = _docker_problem()
    if problem is None:
        code, out = await run("docker", "image", "inspect", *IMAGES, check=False)
        if code != 0:
            problem = "Docker's engine or the stack's images are missing (sudo deploy/docker-up)"
    if problem is not None:
        if os.environ.get("REQUIRE_DOCKER") == "1":
            pytest.fail(f"{problem}, and REQUIRE_DOCKER=1", pytrace=False)
        pytest.skip(problem)

    async with RealtimeEmulator(host="0.0.0.0") as emulator:
        token, api_key = secrets.token_hex(16), secrets.token_hex(16)
        env_file = tmp_path / ".env"
        stack = Stack(env_file, free_port(), token, api_key)
        env_file.write_text(
            "\n".join(
                [
                    "DOMAIN=localhost",
                    f"POSTGRES_PASSWORD={secrets.token_hex(12)}",
                    "OPENAI_API_KEY=sk-test",
                    # The emulator on this host, as the containers reach it.
                    f"OPENAI_REALTIME_URL=ws://host.docker.internal:{emulator.port}{emulator.path}",
                    f"TWILIO_AUTH_TOKEN={token}",
                    f"RUNNER_API_KEY={api_key}",
                    f"HTTPS_PORT={stack.https_port}",
                    f"HTTP_PORT={free_port()}",
                    f"RUNNER_ENV_FILE={env_file}",
                    "",
                ]
            )
        )
        try:
            await stack.compose("up", "-d")
            for service in ("runner1", "runner2", "runner3"):
                await wait_for(
                    f"{service} healthy", functools.partial(_is_healthy, stack, service), 120
                )
            # Trust the root certificate of Caddy's internal CA, for aiohttp and websockets.
            root = tmp_path / "caddy-root.crt"
            await wait_for("Caddy's internal CA", lambda: _has_root(stack), timeout=60)
            root.write_text((await stack.compose("exec", "-T", "caddy", "cat", CADDY_ROOT))[1])
            monkeypatch.setattr(
                aiohttp.connector,
                "_SSL_CONTEXT_VERIFIED",
                ssl.create_default_context(cafile=str(root)),
            )
            monkeypatch.setenv("SSL_CERT_FILE", str(root))
            auth = {"Authorization": f"Bearer {api_key}"}
            await wait_for(
                "Caddy serving the runners",
                lambda: _status_is(stack, "/api/info", 200, auth),
                timeout=60,
            )
            yield stack
        finally:
            with contextlib.suppress(Exception):
                _, logs = await stack.compose("logs", "--no-color", "--tail=40", check=False)
                print(logs[-6000:])
            await stack.compose("down", "-v", "--remove-orphans", "-t", "5", check=False)


async def _has_root(stack: Stack) -> bool:
    code, _ = await stack.compose("exec", "-T", "caddy", "test", "-s", CADDY_ROOT, check=False)
    return code == 0


async def _is_healthy(stack: Stack, service: str) -> bool:
    return await stack.health(service) == "healthy"


async def _status_is(stack: Stack, path: str, status: int, headers: dict[str, str]) -> bool:
    return await stack.get(path, **headers) == status


async def _draining(stack: Stack, runner: str) -> bool:
    return await stack.readyz(runner) == 503


def _runner_of(caller: TwilioCaller) -> str:
    """The runner whose own address the call's stream was sent to."""
    assert caller.dial_result is not None and caller.dial_result.stream_url
    match = re.fullmatch(
        r"wss://localhost/r/(runner\d+)/media-stream", caller.dial_result.stream_url
    )
    assert match, caller.dial_result.stream_url
    return match.group(1)


async def _turn(caller: TwilioCaller) -> None:
    """The caller speaks, and hears an answer."""
    before = len(caller.heard)
    await caller.say(tone(800) + silence(800))
    await caller.wait_quiet(after=before, timeout=20)
    assert len(caller.heard) > before


@pytest.mark.call
async def test_a_call_through_the_stack_then_a_runner_drains(stack: Stack) -> None:
    started = time.monotonic()
    # A call through Caddy's TLS: greeting, a turn, hang up; its record in PostgreSQL.
    async with TwilioCaller(
        server_url=stack.origin, public_url="https://localhost", auth_token=stack.token
    ) as caller:
        await caller.call()
        _runner_of(caller)
        await caller.wait_quiet(timeout=20)
        assert len(caller.heard) > 0, "no greeting"
        await _turn(caller)
        await caller.hangup()
        call_sid = caller.call_sid
    await wait_for(
        "the call's record in PostgreSQL",
        lambda: _has_record(stack, call_sid),
        timeout=30,
    )
    assert await stack.sql(f"SELECT bot FROM calls WHERE call_sid = '{call_sid}'") == "default"

    # A runner stopped mid-call drains: the call goes on, then the container exits 0.
    async with TwilioCaller(
        server_url=stack.origin, public_url="https://localhost", auth_token=stack.token
    ) as caller:
        await caller.call()
        runner = _runner_of(caller)
        await caller.wait_quiet(timeout=20)
        # A runner's own address serves its media streams and nothing else.
        assert await stack.get(f"/r/{runner}/readyz") == 404
        assert await stack.readyz(runner) == 200
        container = await stack.container(runner)
        stop = asyncio.create_task(run("docker", "stop", "-t", "75", container, timeout=100))
        await wait_for(f"{runner} draining (/readyz 503)", lambda: _draining(stack, runner), 20)
        await _turn(caller)  # the call in progress goes on during the drain
        assert not caller.ended
        await caller.hangup()
        await asyncio.wait_for(stop, 100)
    _, exit_code = await run("docker", "inspect", "-f", "{{.State.ExitCode}}", container)
    assert exit_code.strip() == "0"
    _, logs = await run("docker", "logs", container)
    assert "Draining: no new calls; 1 active" in logs
    assert "Drained" in logs
    await wait_for(
        "the drained call's record in PostgreSQL",
        lambda: _has_record(stack, caller.call_sid),
        timeout=30,
    )
    print(f"stack test: {time.monotonic() - started:.1f} s after the stack was up")


async def _has_record(stack: Stack, call_sid: str) -> bool:
    rows = await stack.sql(f"SELECT count(*) FROM calls WHERE call_sid = '{call_sid}'")
    return rows == "1"
