"""Issue 8, item 7: one place for each decision, so a reader need not go back and forth.

- loading is one step above ``models`` and ``prune``: ``models`` never imports
  ``prune``, ``prune`` never imports ``load``;
- writing a file to a temporary name and renaming it lives in ``_paths``;
- "did you mean" is written once (``errors.did_you_mean``);
- transport-specific choices live in the transport classes: ``reach.py`` has
  no branches over transport names;
- ``verify`` raises the project's errors.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "edgeprune"


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def calls_in(path: Path) -> list[str]:
    """Dotted names of every call in ``path`` (``os.replace``, ``difflib.get_close_matches``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            parts, f = [], node.func
            while isinstance(f, ast.Attribute):
                parts.append(f.attr)
                f = f.value
            if isinstance(f, ast.Name):
                parts.append(f.id)
            names.append(".".join(reversed(parts)))
    return names


def test_models_never_import_prune_and_prune_never_imports_load():
    for path in (PKG / "models").glob("*.py"):
        bad = {m for m in imports_of(path) if m == "edgeprune.prune" or m.startswith("edgeprune.prune.")}
        assert not bad, f"{path.name} imports {bad}"
    # prune/pipeline.py is the `prune` stage: a caller of load, like export's; nothing in prune/ imports it.
    for path in (PKG / "prune").glob("*.py"):
        if path.name != "pipeline.py":
            assert "edgeprune.load" not in imports_of(path), path.name
            assert "edgeprune.prune.pipeline" not in imports_of(path), path.name


def test_loading_a_builtin_model_does_not_import_the_pruner():
    code = ("import sys; from edgeprune.models import build; build('digits-cnn', pretrained=False); "
            "print(sorted(m for m in sys.modules if m.startswith('edgeprune.prune')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=PKG.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_temporary_name_and_rename_only_in_paths():
    allowed = {PKG / "_paths.py", PKG / "transport" / "local.py"}  # local: the upload protocol's rename primitive
    for path in PKG.rglob("*.py"):
        if path in allowed:
            continue
        renames = [c for c in calls_in(path) if c in ("os.replace", "os.rename")]
        assert not renames, f"{path.relative_to(PKG)} renames files itself: use _paths.atomic_file"
        assert ".tmp-" not in path.read_text(encoding="utf-8"), path


def test_did_you_mean_is_written_once():
    for path in PKG.rglob("*.py"):
        if path.name == "errors.py":
            continue
        assert "difflib.get_close_matches" not in calls_in(path), path.relative_to(PKG)


def test_reach_has_no_branches_over_transport_names():
    source = (PKG / "boards" / "reach.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    names = {"ssh", "adb", "local"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            consts = [c.value for c in ast.walk(node) if isinstance(c, ast.Constant)]
            assert not names & set(consts), ast.get_source_segment(source, node)
        if isinstance(node, ast.Dict):
            keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
            assert not names & keys, ast.get_source_segment(source, node)


def test_transport_classes_own_their_defaults():
    from edgeprune.transport import transport_class

    assert transport_class("ssh").default_workdir == "~/.edgeprune"
    assert transport_class("adb").default_workdir == "/data/local/tmp/edgeprune"
    assert transport_class("local").default_workdir is None


def test_verify_raises_the_projects_errors():
    np = pytest.importorskip("numpy")
    from edgeprune.checks.agreement import agreement
    from edgeprune.errors import EdgePruneError

    with pytest.raises(EdgePruneError, match=r"output 0: shape \(2, 3\) differs from the reference's \(2, 4\)"):
        agreement([np.zeros((2, 4))], [np.zeros((2, 3))])
    with pytest.raises(EdgePruneError, match="1 reference outputs but 2 candidate outputs"):
        agreement([np.zeros((2, 4))], [np.zeros((2, 4)), np.zeros((2, 4))])


# -- issue 22: the floors follow the data, no circles, one home for exceptions ------------------------------

# Top floor first. A module may import modules on its own floor or below, never above (function-local imports
# included: a lazy import still is a dependency). cli/api -> deploy -> latency, load -> the stages -> what the
# stages stand on -> boards and transports -> ground.
FLOORS = [
    ("cli", "api", "__main__"),
    ("deploy",),
    ("latency", "load"),
    ("prune", "finetune", "export", "ship", "tasks"),
    ("bench", "models", "data", "checks"),
    ("transport", "boards"),
    ("errors", "_paths", "_threads", "progress", "validate", "safeload", "userfn", "__init__"),
]
FLOOR = {name: i for i, names in enumerate(FLOORS) for name in names}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(node: ast.ImportFrom, here: str, is_pkg: bool) -> str | None:
    if node.level == 0:
        return node.module
    base = here.split(".") if is_pkg else here.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _graph() -> dict[str, set[str]]:
    """edgeprune module -> the edgeprune modules it imports (anywhere in its body)."""
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.ImportFrom):
                mod = _resolve(node, name, path.name == "__init__.py")
                if mod:
                    targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for t in targets:
                if t in modules and t != name:
                    deps.add(t)
        graph[name] = deps
    return graph


def _floor(module: str) -> int:
    part = module.split(".")[1] if module.count(".") else "__init__"
    assert part in FLOOR, f"{module}: put '{part}' on a floor in tests/test_structure.py FLOORS"
    return FLOOR[part]


def test_no_module_imports_one_on_a_floor_above_it():
    bad = [f"{m} (floor {_floor(m)}) imports {d} (floor {_floor(d)})"
           for m, deps in _graph().items() for d in deps if _floor(d) < _floor(m)]
    assert not bad, "\n".join(sorted(bad))


def test_no_import_circles_between_edgeprune_modules():
    graph = _graph()
    # a package's __init__ re-exporting its own modules is not a circle of the code's hand-offs
    edges = {m: {d for d in deps if not (m.startswith(d + ".") and d + "." in m)} for m, deps in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    circles = []
    counter = [0]

    def strongconnect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    import sys

    sys.setrecursionlimit(10000)
    for v in list(edges):
        if v not in index:
            strongconnect(v)
    assert not circles, "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


def test_every_exception_class_lives_in_errors_py():
    bad = []
    for path in PKG.rglob("*.py"):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                bases = {getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}
                if any(b.endswith(("Error", "Exception")) or b in ("Interrupted",) for b in bases):
                    bad.append(f"{path.relative_to(PKG)}: {node.name}")
    assert not bad, bad


# -- issue 22: imports at the head of modules, except a heavy library's, which loads lazily and says so ----------

# heavy libraries, and optional ones (not in pyproject's dependencies), which may load inside a function
HEAVY = {"flatbuffers", "torch", "tensorflow", "onnx", "onnxruntime", "ultralytics", "timm", "matplotlib", "torch_pruning",
         "ai_edge_litert", "cv2", "pycocotools", "faster_coco_eval", "paramiko", "scipy", "sklearn", "skimage",
         "PIL", "yaml", "numpy", "rich", "click", "onnx2tf", "tflite_runtime", "nncf", "torchvision"}


def _function_imports(tree: ast.Module):
    """(import node, inside a try block) for every import inside a function."""
    in_try: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try):
            for part in node.body + [s for h in node.handlers for s in h.body] + node.orelse + node.finalbody:
                in_try.update(id(s) for s in ast.walk(part))
    seen: set[int] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in seen:
                    seen.add(id(node))
                    yield node, id(node) in in_try


def test_imports_inside_functions_are_lazy_loads_of_heavy_libraries_and_say_so():
    """An import inside a function is an optional dependency (inside ``try``), or loads a heavy library the
    module does not load at import time, and then the module says so in one ``# Lazy imports:`` comment (or
    the line says why); anything else belongs at the head of the module, where a reader sees it. (That each
    such import really loads something the module does not was checked when they were moved: importing every
    module alone loaded the same libraries before and after.)"""
    std = set(sys.stdlib_module_names)
    bad = []
    for path in PKG.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        name = _module_name(path)
        for node, in_try in _function_imports(ast.parse(text)):
            if in_try:
                continue
            where = f"{path.relative_to(PKG)}:{node.lineno}"
            if isinstance(node, ast.ImportFrom):
                mod = _resolve(node, name, path.name == "__init__.py") or ""
                targets = [mod, *(f"{mod}.{a.name}" for a in node.names)]
            else:
                targets = [a.name for a in node.names]
            top = targets[0].split(".")[0]
            said = "# Lazy imports:" in text or "#" in lines[node.end_lineno - 1]
            if top in std:
                bad.append(f"{where}: the standard library's {targets[0]} is cheap: import it at the head")
            elif not said:
                bad.append(f"{where}: a lazy import without a '# Lazy imports:' comment saying why")
            elif top != "edgeprune" and top not in HEAVY:
                bad.append(f"{where}: {top} is not a heavy library (tests/test_structure.py HEAVY): import it "
                           "at the head")
    assert not bad, "\n".join(sorted(bad))
