"""The house's plan (docs/architecture.md) held against the code: no import runs upwards between the
layers, and no module imports itself back through others (a circle). Imports inside functions count."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "raypipe"
# bottom to top: a module may import from its own layer and the layers below (docs/architecture.md)
LAYERS = (
    ("raypipe.errors", "raypipe.window", "raypipe.storage", "raypipe.progress", "raypipe.version",
     "raypipe.resources"),
    ("raypipe.scans", "raypipe.chem"),
    ("raypipe.images", "raypipe.simulation"),
    ("raypipe.model",),
    ("raypipe.training", "raypipe.identify"),
    ("raypipe.reports",),
    ("raypipe.pipelines",),
    ("raypipe.labels",),
    ("raypipe.cli", "raypipe"),
)


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The raypipe modules ``name`` imports (at module level or in a function; TYPE_CHECKING blocks only
    name types and are left out)."""
    tree = ast.parse(path.read_text())
    skip = {id(node) for node in ast.walk(tree) if isinstance(node, ast.If)
            and "TYPE_CHECKING" in ast.unparse(node.test) for node in ast.walk(node)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:  # relative
                base = ".".join(name.split(".")[: -node.level + (1 if path.name == "__init__.py" else 0)] + [base])
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target.startswith("raypipe") and target != name:
                out.add(target)
    return out


def layer(module: str) -> int:
    best = None
    for k, names in enumerate(LAYERS):
        for prefix in names:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (k, len(prefix))
    if best is None:
        raise AssertionError(f"{module} is in no layer of LAYERS: place it in docs/architecture.md and here")
    return best[0]


GRAPH = {name: imports(name, path, set(modules())) for name, path in modules().items()}


def test_every_module_has_a_layer():
    for name in GRAPH:
        layer(name)


def test_no_import_runs_upwards():
    upwards = sorted(f"{a} -> {b}" for a, targets in GRAPH.items() for b in targets
                     if b != "raypipe" and layer(b) > layer(a))
    assert upwards == [], "\n".join(upwards)


def test_no_import_circles():
    circles, state = [], {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(GRAPH.get(node, ())):
            if nxt == "raypipe":  # the package's lazy API: imported by name, it loads nothing
                continue
            if state.get(nxt) == "open":
                circles.append(" -> ".join(trail[trail.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert circles == [], "\n".join(circles)


@pytest.mark.parametrize("name", ["raypipe.errors", "raypipe.chem.elements", "raypipe.model.files"])
def test_the_graph_sees_real_imports(name):
    """The check reads imports as they are: a module known to be imported is found among the arrows."""
    assert any(name in targets for targets in GRAPH.values())


GROUND = {"errors", "window", "storage", "progress", "version", "resources"}
DOC = PACKAGE.parent / "docs" / "architecture.md"


def unit(module: str) -> str:
    """The box a module is drawn in: its package (``model``), a top-level module (``cli``), or the ground
    floor's small modules together (``ground``)."""
    parts = module.split(".")
    name = parts[1] if len(parts) > 1 else "raypipe"
    return "ground" if name in GROUND else name


def package_edges() -> set[tuple[str, str]]:
    return {(unit(a), unit(b)) for a, targets in GRAPH.items() for b in targets if unit(a) != unit(b)}


def drawn_edges() -> set[tuple[str, str]]:
    import re

    text = DOC.read_text()
    block = text.split("```mermaid", 1)[1].split("```", 1)[0]
    return set(re.findall(r"^\s*(\w+)\s*-->\s*(\w+)\s*$", block, flags=re.M))


def test_the_picture_in_docs_matches_the_imports():
    """docs/architecture.md draws every package-to-package import and no other (its mermaid arrows)."""
    code, drawn = package_edges(), drawn_edges()
    assert drawn, "no arrows found in docs/architecture.md's mermaid block"
    missing = "\n".join(f"    {a} --> {b}" for a, b in sorted(code - drawn))
    extra = "\n".join(f"    {a} --> {b}" for a, b in sorted(drawn - code))
    assert code == drawn, f"imports not drawn:\n{missing}\ndrawn but not imported:\n{extra}"


def test_every_relative_link_and_picture_of_the_docs_exists():
    """The README's and docs' relative links and pictures (``[...](path)``, ``![...](path)``) point at files
    of the checkout, relative to the page that holds them (as GitHub renders them)."""
    import re

    root = PACKAGE.parent
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    checked, broken = 0, []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            path = target.split("#")[0]
            if not path or re.match(r"[a-z][a-z0-9+.-]*:", path):  # an anchor, http(s), mailto
                continue
            checked += 1
            if not (page.parent / path).exists():
                broken.append(f"{page.relative_to(root)}: {target}")
    assert checked >= 5 and not broken, broken
