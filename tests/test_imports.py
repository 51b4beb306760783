"""No import circles in minilm/ and kernels/, and imports that point down: the modules form layers
(LAYERS, bottom first), each importing only its own layer and those below it. The graph is read
from the source (an AST walk: imports inside functions count too, since a lazy import hides a
circle, it does not remove it), and a test plants a circle to show the check finds one."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("minilm", "kernels")

# Bottom first. A module belongs to the longest name here that it is or sits under; the package
# docstrings (minilm/model/__init__.py, ...) say the same in words.
LAYERS = (
    ("minilm.files", "minilm.rng", "minilm.objectives", "minilm.metrics", "minilm.model.registry"),  # leaves
    ("minilm.config",),
    ("minilm.model", "kernels"),  # the network; kernels are its fused paths
    ("minilm.tokenizer", "minilm.data", "minilm.optim", "minilm.peft", "minilm.interop", "minilm.checkpoint",
     "minilm.pretrained"),  # text in, batches out; directories in and out
    ("minilm.inference",),
    ("minilm.training",),  # evaluation during training generates and predicts
    ("minilm", "minilm.cli", "minilm.convert", "minilm.pretrained.export"),  # the public API and the tools
)


def modules(root: Path, packages) -> dict:
    """{dotted module name: its file} for every .py file of the packages."""
    found = {}
    for package in packages:
        for f in sorted((root / package).rglob("*.py")):
            parts = f.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return found


def import_graph(root: Path, packages=PACKAGES) -> dict:
    """{module: set of modules of the packages it imports}, anywhere in its source."""
    mods = modules(root, packages)

    def known(name: str):
        while name and name not in mods:  # `from minilm.x import f`: f is not a module, minilm.x is
            name = name.rpartition(".")[0]
        return name or None

    graph = {m: set() for m in mods}
    for m, f in mods.items():
        package = m if f.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"), filename=str(f))):
            if isinstance(node, ast.Import):
                targets = [known(a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from . import x, from ..y import z
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets = [known(f"{base}.{a.name}") for a in node.names]
            else:
                continue
            graph[m] |= {t for t in targets if t and t != m}
    return graph


def cycles(graph: dict) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles():
    graph = import_graph(ROOT)
    assert len(graph) > 40 and graph["minilm.checkpoint"]  # the real package was read
    assert cycles(graph) == []


def test_the_bottom_layers_import_nothing_of_minilm_above_them():
    graph = import_graph(ROOT)
    assert graph["minilm.files"] == set()
    assert graph["minilm.model.registry"] == set()  # it imports the built-ins' modules by name, when first needed
    assert graph["minilm.config"] <= {"minilm.files", "minilm.model.registry"}


def layer_of(module: str, layers=LAYERS) -> int:
    """The index of the layer whose longest matching name the module is or sits under."""
    matches = [(len(name), i) for i, names in enumerate(layers) for name in names
               if module == name or module.startswith(name + ".")]
    assert matches, f"{module} is in no layer of tests/test_imports.py's LAYERS"
    return max(matches)[1]


def upward_imports(graph: dict, layers=LAYERS) -> list[str]:
    return [f"{m} -> {t}" for m, targets in sorted(graph.items()) for t in sorted(targets) if layer_of(t, layers) > layer_of(m, layers)]


def test_imports_point_down():
    graph = import_graph(ROOT)
    assert {layer_of(m) for m in graph} == set(range(len(LAYERS)))  # every layer holds modules
    named = {name for names in LAYERS for name in names} - {"minilm"}
    unplaced = [m for m in graph if m != "minilm" and not any(m == n or m.startswith(n + ".") for n in named)]
    assert unplaced == [], "a new module: give it a layer in LAYERS"
    assert upward_imports(graph) == []


def test_a_planted_upward_import_is_found(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "low").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low" / "__init__.py").write_text("")
    (pkg / "low" / "a.py").write_text("def f():\n    from pkg.high import g  # lazily, still upward\n")
    (pkg / "high.py").write_text("from pkg.low.a import f\n")
    layers = (("pkg.low",), ("pkg",))
    graph = import_graph(tmp_path, ["pkg"])
    assert upward_imports(graph, layers) == ["pkg.low.a -> pkg.high"]


def test_a_planted_circle_is_found(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from pkg.sub import c  # a lazy import is an import\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("from .. import a\n")  # relative, back to the top
    (pkg / "d.py").write_text("import pkg.a\n")  # imports into the circle, not part of it
    assert cycles(import_graph(tmp_path, ["pkg"])) == [["pkg.a", "pkg.b", "pkg.sub.c"]]
