"""The Dockerfile, .dockerignore and docs/deploy.md, checked without a Docker engine.

A small parser reads the Dockerfile's instructions (line continuations, comments, the
``escape`` directive). Each property is a check that returns the problems it finds: the
repository's Dockerfile must have none, and a bad example of each property must make its
check report one, so that no check passes by construction.
"""

import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"

FINAL_IMAGE = "python:3.11-slim"
SERVE = ["pipecat-realtime-twilio", "serve"]
RUNTIME_ENV = {
    "HOST": "0.0.0.0",
    "PORT": "8080",
    "BOTS_DIR": "/app/bots",
    "PYTHONUNBUFFERED": "1",
    "DATABASE_URL": "sqlite:////data/calls.db",
    "OUTBOX_DIR": "/data/outbox",
    "RECORDINGS_DIR": "/data/recordings",
}
BUILD_TOOLS = {"build-essential", "gcc", "g++", "clang", "make", "cmake", "pkg-config"}


# --- parsing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    args: str  # everything after the keyword, continuations joined
    line: int  # line of the keyword, from 1


def parse_dockerfile(text: str) -> list[Instruction]:
    """Split a Dockerfile into instructions, joining continued lines like Docker does."""
    lines = text.splitlines()
    escape = "\\"
    for line in lines:  # parser directives come first, as "# name=value" comments
        directive = re.fullmatch(r"#\s*([a-zA-Z]+)\s*=\s*(\S+)\s*", line)
        if directive is None:
            break
        if directive.group(1).lower() == "escape":
            escape = directive.group(2)
    instructions = []
    parts: list[str] = []
    start = 0
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # blank and comment lines, also inside a continued instruction
        if not parts:
            start = number
        body = line.rstrip()
        if body.endswith(escape):
            parts.append(body[: -len(escape)])
            continue
        parts.append(body)
        keyword, _, args = "".join(parts).strip().partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
        parts = []
    if parts:
        raise ValueError(f"line {start}: the last instruction continues past the end of the file")
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """The build stages, each starting with its FROM (ARGs before the first FROM are dropped)."""
    result: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            result.append([instruction])
        elif result:
            result[-1].append(instruction)
    return result


def words(args: str) -> list[str]:
    """Arguments of an instruction in exec form (JSON array) or shell form."""
    if args.startswith("["):
        try:
            value = json.loads(args)
        except json.JSONDecodeError:
            pass  # Docker runs a malformed array in shell form
        else:
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return value
    return shlex.split(args)


def split_flags(tokens: list[str]) -> tuple[dict[str, str], list[str]]:
    """Leading ``--name=value`` (or ``--name``) flags, and the rest."""
    flags: dict[str, str] = {}
    rest = list(tokens)
    while rest and rest[0].startswith("--"):
        name, _, value = rest.pop(0)[2:].partition("=")
        flags[name] = value
    return flags, rest


def from_image(instruction: Instruction) -> tuple[str, str | None]:
    """Image and stage name of a FROM instruction."""
    _, rest = split_flags(shlex.split(instruction.args))
    name = rest[2] if len(rest) >= 3 and rest[1].lower() == "as" else None
    return rest[0], name


def env_values(instructions: list[Instruction]) -> dict[str, str]:
    """Values set by ENV instructions, later ones winning."""
    values: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword != "ENV":
            continue
        tokens = shlex.split(instruction.args)
        if tokens and "=" not in tokens[0]:  # legacy form: ENV NAME value with spaces
            values[tokens[0]] = " ".join(tokens[1:])
            continue
        for token in tokens:
            name, _, value = token.partition("=")
            values[name] = value
    return values


def ignore_pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex over context-relative paths (Go filepath.Match, **)."""
    pattern = pattern.strip().strip("/")
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 1 :]:
            end = pattern.index("]", i + 1)
            out.append("[" + pattern[i + 1 : end].replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def ignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """The (negated, pattern) rules of a .dockerignore file, in order."""
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        rules.append((negated, ignore_pattern(line[1:] if negated else line)))
    return rules


def ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether .dockerignore leaves ``path`` (context-relative) out: the last matching rule wins.

    A rule matches a path when it matches the path or one of its parent folders.
    """
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    result = False
    for negated, pattern in rules:
        if any(pattern.fullmatch(candidate) for candidate in candidates):
            result = not negated
    return result


# --- checks: each returns its problems --------------------------------------------------------

Check = Callable[[list[Instruction], Path], list[str]]


def check_multi_stage(instructions: list[Instruction], root: Path) -> list[str]:
    all_stages = stages(instructions)
    if len(all_stages) < 2:
        return [f"{len(all_stages)} FROM instruction(s); a multi-stage build needs at least two"]
    problems = []
    image, _ = from_image(all_stages[-1][0])
    if image != FINAL_IMAGE:
        problems.append(f"the final stage is FROM {image}, not {FINAL_IMAGE}")
    earlier = {str(n) for n in range(len(all_stages) - 1)}
    earlier |= {name for s in all_stages[:-1] if (name := from_image(s[0])[1])}
    copied_from = {
        split_flags(words(i.args))[0].get("from") for i in all_stages[-1] if i.keyword == "COPY"
    }
    if not copied_from & earlier:
        problems.append("the final stage copies nothing from an earlier stage (the venv)")
    return problems


def check_non_root_user(instructions: list[Instruction], root: Path) -> list[str]:
    final = stages(instructions)[-1]
    cmd_index = max((n for n, i in enumerate(final) if i.keyword == "CMD"), default=len(final))
    users = [i.args.split(":")[0].strip() for i in final[:cmd_index] if i.keyword == "USER"]
    if not users:
        return ["the final stage sets no USER before CMD, so the runner would run as root"]
    if users[-1] in {"root", "0", ""}:
        return [f"the final stage runs CMD as {users[-1] or 'an empty user'!r}"]
    return []


def check_healthcheck(instructions: list[Instruction], root: Path) -> list[str]:
    checks = [i for i in stages(instructions)[-1] if i.keyword == "HEALTHCHECK"]
    if not checks:
        return ["the final stage has no HEALTHCHECK"]
    _, rest = split_flags(shlex.split(checks[-1].args))
    if not rest or rest[0].upper() != "CMD":
        return [f"HEALTHCHECK {checks[-1].args!r} runs no command"]
    command = " ".join(rest[1:])
    problems = []
    if not re.search(r"http://127\.0\.0\.1:\$\{?PORT\}?/healthz\b", command):
        problems.append(f"HEALTHCHECK does not request http://127.0.0.1:$PORT/healthz: {command}")
    if re.search(r"\b(curl|wget)\b", command):
        problems.append("HEALTHCHECK uses curl or wget, which python:3.11-slim does not have")
    return problems


def check_expose(instructions: list[Instruction], root: Path) -> list[str]:
    ports = {
        port.split("/")[0]
        for i in stages(instructions)[-1]
        if i.keyword == "EXPOSE"
        for port in i.args.split()
    }
    return [] if "8080" in ports else [f"EXPOSE 8080 is missing (exposed: {sorted(ports)})"]


def check_cmd(instructions: list[Instruction], root: Path) -> list[str]:
    cmds = [i for i in stages(instructions)[-1] if i.keyword == "CMD"]
    if not cmds:
        return ["the final stage has no CMD"]
    if not cmds[-1].args.startswith("["):
        return ["CMD is in shell form: SIGTERM would reach /bin/sh, not the runner"]
    command = words(cmds[-1].args)
    return [] if command == SERVE else [f"CMD runs {command}, not {SERVE}"]


def check_runtime_settings(instructions: list[Instruction], root: Path) -> list[str]:
    final = stages(instructions)[-1]
    env = env_values(final)
    problems = [
        f"ENV {name} is {env.get(name)!r}, not {value!r}"
        for name, value in RUNTIME_ENV.items()
        if env.get(name) != value
    ]
    workdirs = [i.args for i in final if i.keyword == "WORKDIR"]
    if workdirs[-1:] != ["/app"]:
        problems.append(f"WORKDIR is {workdirs[-1:]}, not /app")
    signals = [i.args for i in final if i.keyword == "STOPSIGNAL"]
    if signals[-1:] != ["SIGTERM"]:
        problems.append(f"STOPSIGNAL is {signals[-1:]}, not SIGTERM")
    volumes = {v for i in final if i.keyword == "VOLUME" for v in words(i.args)}
    if "/data" not in volumes:
        problems.append("/data is not a VOLUME")
    return problems


def _apt_installs(instruction: Instruction) -> list[str]:
    """The ``apt-get install``/``apt install`` commands of a RUN instruction."""
    if instruction.keyword != "RUN":
        return []
    commands = re.split(r"&&|\|\||;|\|", instruction.args)
    return [c for c in commands if re.search(r"\bapt(-get)?\s+(\S+\s+)*install\b", c)]


def check_apt(instructions: list[Instruction], root: Path) -> list[str]:
    problems = []
    for instruction in instructions:
        for install in _apt_installs(instruction):
            if "--no-install-recommends" not in install:
                problems.append(
                    f"line {instruction.line}: apt install without --no-install-recommends"
                )
            if not re.search(r"\brm\s+-(rf|fr)\s+/var/lib/apt/lists", instruction.args):
                problems.append(f"line {instruction.line}: apt install leaves /var/lib/apt/lists")
    return problems


def check_no_build_tools_in_final(instructions: list[Instruction], root: Path) -> list[str]:
    problems = []
    for instruction in stages(instructions)[-1]:
        for install in _apt_installs(instruction):
            packages = set(install.split())
            tools = packages & BUILD_TOOLS | {p for p in packages if p.endswith("-dev")}
            if tools:
                problems.append(f"line {instruction.line}: final stage installs {sorted(tools)}")
    return problems


def check_no_remote_add(instructions: list[Instruction], root: Path) -> list[str]:
    problems = []
    for instruction in instructions:
        if instruction.keyword != "ADD":
            continue
        _, rest = split_flags(words(instruction.args))
        for source in rest[:-1]:
            if re.match(r"(https?|git|ssh)://|git@", source):
                problems.append(f"line {instruction.line}: ADD of a remote URL {source}")
    return problems


def _context_sources(instructions: list[Instruction]) -> list[tuple[int, str]]:
    """(line, source) of every COPY/ADD source taken from the build context."""
    sources = []
    for instruction in instructions:
        if instruction.keyword not in {"COPY", "ADD"}:
            continue
        flags, rest = split_flags(words(instruction.args))
        if "from" in flags:
            continue
        sources += [(instruction.line, source) for source in rest[:-1]]
    return sources


def check_copy_sources_exist(instructions: list[Instruction], root: Path) -> list[str]:
    problems = []
    for line, source in _context_sources(instructions):
        if re.match(r"[a-z+]+://|git@", source):
            continue  # check_no_remote_add's business
        relative = source.strip("/") or "."
        if ".." in Path(relative).parts:
            problems.append(f"line {line}: {source} is outside the build context")
        elif relative != "." and not list(root.glob(relative)):
            problems.append(f"line {line}: COPY source {source} does not exist in the repository")
    return problems


def check_copied_files_in_context(instructions: list[Instruction], root: Path) -> list[str]:
    ignore_file = root / ".dockerignore"
    rules = ignore_rules(ignore_file.read_text()) if ignore_file.exists() else []
    problems = []
    for line, source in _context_sources(instructions):
        relative = source.strip("/")
        for match in root.glob(relative) if relative and ".." not in relative else []:
            files = [match] if match.is_file() else sorted(match.rglob("*"))
            for path in files:
                relative = path.relative_to(root).as_posix()
                if "__pycache__" in path.parts or path.suffix == ".pyc" or path.is_dir():
                    continue
                if ignored(relative, rules):
                    problems.append(f"line {line}: .dockerignore leaves out {relative}")
    return problems


DRIVER_EXTRAS = {"postgres", "redis"}  # what deploy/compose and deploy/kubernetes run with


def check_driver_extras(instructions: list[Instruction], root: Path) -> list[str]:
    """The builder installs the package's postgres and redis extras (their drivers) by default."""
    builder = stages(instructions)[0]
    defaults = {
        name: value
        for i in builder
        if i.keyword == "ARG"
        for name, _, value in [i.args.partition("=")]
    }
    extras = set(" ".join(shlex.split(defaults.get("EXTRAS", ""))).split())
    problems = [
        f"ARG EXTRAS does not include the {extra} extra by default"
        for extra in sorted(DRIVER_EXTRAS - extras)
    ]
    installs = [
        i
        for i in builder
        if i.keyword == "RUN"
        and re.search(r"\$\{?EXTRAS\b", i.args)
        and "optional-dependencies" in i.args
        and "pip install" in i.args
    ]
    if not installs:
        problems.append("no RUN installs the optional-dependencies of $EXTRAS")
    return problems


CHECKS: list[Check] = [
    check_multi_stage,
    check_non_root_user,
    check_healthcheck,
    check_expose,
    check_cmd,
    check_runtime_settings,
    check_apt,
    check_no_build_tools_in_final,
    check_no_remote_add,
    check_copy_sources_exist,
    check_copied_files_in_context,
    check_driver_extras,
]

# A Dockerfile with every property; each bad example below breaks one of them.
GOOD = """\
FROM python:3.11-slim AS builder
RUN python -m venv /opt/venv
ARG EXTRAS="postgres redis"
RUN python -c 'import tomllib; print(tomllib.load(open("p", "rb"))["optional-dependencies"])' \\
    $EXTRAS > r.txt && pip install -r r.txt
FROM python:3.11-slim
ENV HOST=0.0.0.0 PORT=8080 BOTS_DIR=/app/bots PYTHONUNBUFFERED=1 \\
    DATABASE_URL=sqlite:////data/calls.db OUTBOX_DIR=/data/outbox RECORDINGS_DIR=/data/recordings
WORKDIR /app
COPY --from=builder /opt/venv /opt/venv
COPY bots/ /app/bots/
USER 10001
VOLUME /data
EXPOSE 8080
HEALTHCHECK CMD python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:${PORT}/healthz')"
STOPSIGNAL SIGTERM
CMD ["pipecat-realtime-twilio", "serve"]
"""


def _bad(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new)


BAD = [
    (check_multi_stage, GOOD.replace("FROM python:3.11-slim AS builder\n", "")),
    (check_multi_stage, _bad("FROM python:3.11-slim\nENV", "FROM python:3.11\nENV")),
    (check_multi_stage, _bad("COPY --from=builder", "COPY --from=elsewhere")),
    (check_non_root_user, _bad("USER 10001\n", "")),
    (check_non_root_user, _bad("USER 10001", "USER root")),
    (check_non_root_user, _bad("USER 10001", "USER 0:0")),
    (check_non_root_user, _bad("USER 10001\n", "") + "USER 10001\n"),
    (check_non_root_user, _bad("USER 10001\n", "").replace("AS builder", "AS b\nUSER 10001")),
    (check_healthcheck, _bad("HEALTHCHECK CMD", "# HEALTHCHECK CMD")),
    (check_healthcheck, _bad("/healthz", "/readyz")),
    (check_healthcheck, _bad("HEALTHCHECK CMD python", "HEALTHCHECK NONE\n#")),
    (check_healthcheck, GOOD + "HEALTHCHECK CMD curl -f http://127.0.0.1:${PORT}/healthz\n"),
    (check_expose, _bad("EXPOSE 8080", "EXPOSE 80")),
    (check_cmd, _bad('CMD ["pipecat-realtime-twilio", "serve"]', 'CMD ["python", "app.py"]')),
    (
        check_cmd,
        _bad('CMD ["pipecat-realtime-twilio", "serve"]', "CMD pipecat-realtime-twilio serve"),
    ),
    (check_cmd, _bad('CMD ["pipecat-realtime-twilio", "serve"]', "")),
    (check_runtime_settings, _bad("HOST=0.0.0.0", "HOST=127.0.0.1")),
    (check_runtime_settings, _bad("PYTHONUNBUFFERED=1 ", "")),
    (check_runtime_settings, _bad("WORKDIR /app", "WORKDIR /srv")),
    (check_runtime_settings, _bad("STOPSIGNAL SIGTERM", "STOPSIGNAL SIGINT")),
    (check_runtime_settings, _bad("VOLUME /data", "VOLUME /var/lib/calls")),
    (
        check_apt,
        GOOD + "RUN apt-get update && apt-get install -y git && rm -rf /var/lib/apt/lists/*\n",
    ),
    (
        check_apt,
        GOOD + "RUN apt-get update \\\n && apt-get install -y --no-install-recommends git\n",
    ),
    (
        check_no_build_tools_in_final,
        GOOD + "RUN apt-get update && apt-get install -y --no-install-recommends gcc libpq-dev \\\n"
        "    && rm -rf /var/lib/apt/lists/*\n",
    ),
    (check_no_remote_add, GOOD + "ADD https://example.com/tool.tar.gz /opt/\n"),
    (check_no_remote_add, GOOD + "ADD git@github.com:owner/repo.git /src\n"),
    (check_copy_sources_exist, GOOD + "COPY no_such_dir/ /app/\n"),
    (check_copy_sources_exist, GOOD + "COPY ../secrets /app/\n"),
    (check_copied_files_in_context, GOOD + "COPY README.md /app/\n"),
    (check_driver_extras, _bad('ARG EXTRAS="postgres redis"', 'ARG EXTRAS="postgres"')),
    (check_driver_extras, _bad('ARG EXTRAS="postgres redis"', "ARG EXTRAS")),
    (check_driver_extras, _bad("    $EXTRAS > r.txt", "    postgres redis > r.txt")),
    (check_driver_extras, _bad("pip install -r r.txt", "true")),
]


@pytest.fixture
def bad_repo(tmp_path: Path) -> Path:
    """A repository with bots/ and a README.md that .dockerignore leaves out."""
    (tmp_path / "bots").mkdir()
    (tmp_path / "bots" / "default.py").write_text("")
    (tmp_path / "README.md").write_text("")
    (tmp_path / ".dockerignore").write_text("*.md\n")
    return tmp_path


# --- the tests ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    assert DOCKERFILE.is_file(), "Dockerfile is missing"
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_dockerfile(dockerfile: list[Instruction], check: Check) -> None:
    assert check(dockerfile, ROOT) == []


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_good_example_passes(check: Check, bad_repo: Path) -> None:
    assert check(parse_dockerfile(GOOD), bad_repo) == []


@pytest.mark.parametrize(
    ("check", "text"), BAD, ids=[f"{c.__name__}-{n}" for n, (c, _) in enumerate(BAD)]
)
def test_check_catches_bad_example(check: Check, text: str, bad_repo: Path) -> None:
    assert check(parse_dockerfile(text), bad_repo) != []


def test_every_check_has_a_bad_example() -> None:
    assert {check for check, _ in BAD} == set(CHECKS)


def test_parser_joins_continuations_and_skips_comments() -> None:
    text = (
        "# escape=\\\n"
        "FROM python:3.11-slim\n"
        "RUN a \\\n"
        "# a comment inside the instruction\n"
        "\n"
        "    && b\n"
        'cmd ["x"]\n'
    )
    assert parse_dockerfile(text) == [
        Instruction("FROM", "python:3.11-slim", 2),
        Instruction("RUN", "a     && b", 3),
        Instruction("CMD", '["x"]', 7),
    ]
    backtick = "# escape=`\nFROM scratch\nRUN a `\n  b\n"
    assert parse_dockerfile(backtick)[-1] == Instruction("RUN", "a   b", 3)
    with pytest.raises(ValueError):
        parse_dockerfile("FROM scratch\nRUN a \\\n")


@pytest.mark.parametrize(
    "path",
    [".git", ".git/HEAD", ".env", ".venv/bin/python", "heard.wav", "tests/test_x.py", "calls.db"],
)
def test_dockerignore_leaves_out(path: str) -> None:
    assert DOCKERIGNORE.is_file(), ".dockerignore is missing"
    assert ignored(path, ignore_rules(DOCKERIGNORE.read_text())), path


def test_ignore_matching() -> None:
    rules = ignore_rules(".git\n**/*.db\n*.wav\n!keep.wav\n")
    assert ignored(".git/config", rules)
    assert ignored("data/calls.db", rules)
    assert ignored("heard.wav", rules)
    assert not ignored("keep.wav", rules)
    assert not ignored("assets/heard.wav", rules)  # * does not cross folders
    assert not ignored(".github/workflows/ci.yml", rules)


@pytest.mark.parametrize(
    "word", ["/healthz", "/readyz", "/metrics", "MAX_CALLS", "DATABASE_URL", "SIGTERM"]
)
def test_deploy_doc_mentions(word: str) -> None:
    assert DEPLOY_DOC.is_file(), "docs/deploy.md is missing"
    assert word in DEPLOY_DOC.read_text()
