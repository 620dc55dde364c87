"""The package's shape: three wings, imports that run one way, no import circles."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pipecat_realtime_twilio"
NAME = "pipecat_realtime_twilio"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module of the package that ``path`` imports, anywhere in it.

    Imports inside functions and under ``if TYPE_CHECKING:`` count too.
    """
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")
                parent = parent[: len(parent) - (node.level - 1)]
                base = ".".join([*parent, base] if base else parent)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    return {name for name in found if name in modules and name != this}


def graph() -> dict[str, set[str]]:
    return {module_name(path): imports_of(path) for path in PACKAGE.rglob("*.py")}


def test_the_package_shows_its_three_wings():
    top = {p.name for p in PACKAGE.iterdir() if not p.name.startswith(("_", "."))}
    assert {"agent", "phone", "runner", "testing"} <= top
    assert "twilio" not in top  # no sub-package named after a library it imports
    assert (PACKAGE / "py.typed").exists()
    for wing in ("agent", "phone", "runner"):
        doc = ast.get_docstring(ast.parse((PACKAGE / wing / "__init__.py").read_text()))
        assert doc and "Imports:" in doc, f"{wing}/__init__.py says what it may import"


def test_imports_run_one_way():
    for module, imported in graph().items():
        wing = module.split(".")[1] if module.count(".") else ""
        if wing in ("agent", "phone"):
            other = "phone" if wing == "agent" else "agent"
            for forbidden in (f"{NAME}.{other}", f"{NAME}.runner"):
                bad = sorted(m for m in imported if m.startswith(forbidden))
                assert not bad, f"{module} imports {bad}"
        if wing == "runner" or module in (f"{NAME}.cli", f"{NAME}.simulate", NAME):
            continue
        if wing == "testing":
            continue
        bad = sorted(m for m in imported if m.startswith(f"{NAME}.runner"))
        assert not bad, f"{module} imports the runner: {bad}"


def test_no_import_circles():
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's strongly connected components
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in edges.get(module, ()):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in edges:
        if module not in index:
            visit(module)
    # A package's __init__ importing its own modules is no circle of ours unless they
    # import it back; the graph holds both directions, so any cycle here is real.
    assert circles == []


def test_no_module_outside_the_testing_kit_is_over_600_lines():
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in PACKAGE.rglob("*.py")
        if "testing" not in path.parts and (n := len(path.read_text().splitlines())) > 600
    }
    assert long == {}
