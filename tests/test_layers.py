"""The layers the README's Layout section describes, checked on the source: no import cycles, no import against
the layers, nothing heavy under config, no test support in the product. Reads the code with `ast` (nothing is
imported), so it runs in about a second and fails on the change that breaks the structure, naming file and line.

Cycles count imports inside functions too: a lazy import hides a cycle from Python's import machinery, not from
the design (the two modules still need each other and cannot be understood or tested apart). Imports under
`if TYPE_CHECKING:` never run and are not counted. Importing `a.b.c` also runs `a/__init__.py` and
`a/b/__init__.py` first: those count, except a module's own enclosing packages (already running when it runs,
so a package that re-exports its own modules is not a cycle).
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.process import REPO

PRODUCT = ("pipeline", "mlops_unity_pipeline", "hydra_plugins")

# Each module belongs to the group of the longest prefix that names it (README: Layout, "Layers").
GROUPS = {
    "leaf": ("pipeline", "pipeline.paths", "pipeline.digest", "pipeline.redaction", "pipeline.processes",
             "pipeline.comparison", "pipeline.config.errors"),
    "sim": ("pipeline.sim",),
    "config": ("pipeline.config",),
    "domain": ("pipeline.training", "pipeline.tracking", "pipeline.evaluation", "pipeline.registry",
               "pipeline.offline", "pipeline.unity", "pipeline.reporting", "pipeline.mlagents_patches"),
    "stages": ("pipeline.stages",),
    "orchestration": ("pipeline.sweeps", "pipeline.scheduling", "pipeline.launch", "pipeline.cli", "pipeline.run",
                      "mlops_unity_pipeline", "hydra_plugins"),
}
UPPER = {"orchestration"}
# What each group must not import (at any level, functions included).
FORBIDDEN = {
    "leaf": {"leaf", "sim", "config", "domain", "stages", "orchestration"},
    "sim": {"config", "domain", "stages", "orchestration"},
    "config": {"stages", "orchestration"} | {"pipeline.training", "pipeline.tracking", "pipeline.evaluation",
                                             "pipeline.reporting"},
    "domain": {"stages", "orchestration"},
    "stages": {"orchestration"},
    "orchestration": set(),
}
# Known debts, each with its way out; an entry that no longer matches an import fails the test (remove it).
ALLOWED: dict[tuple[str, str], str] = {}
# The only modules that read MLFLOW_RUN_ID, the run `mlflow run` (or a caller of mlagents-learn) made for the process:
# entry points, each reading it once; below them the run is passed explicitly (RunPlan.adopted_run_id).
RUN_ID_ENTRY_POINTS = {
    "pipeline.cli": "`mlflow run`'s entry points -> LaunchRequest.run_id",
    "pipeline.run": "the Hydra app run alone -> RunPlan.adopted_run_id",
    "pipeline.sweeps.callbacks": "a sweep started by `mlflow run`: its run becomes the sweep's parent",
    "pipeline.tracking.mlagents_learn_run": "plain mlagents-learn with our stats-writer plugin",
}
# Cycles known and not yet broken, each with its way out: a cycle whose modules all lie in these packages.
KNOWN_CYCLES: dict[tuple[str, ...], str] = {}
# Importing config must stay cheap: none of these may load, however indirectly, at module level.
HEAVY = ("mlflow", "torch", "mlagents", "onnx", "onnxruntime", "matplotlib", "google", "ray", "psycopg", "optuna",
         "grpc", "sklearn", "pandas")
CHEAP = ("pipeline.config.compose", "pipeline.config.plan", "pipeline.config.schema", "pipeline.config.command_line",
         "pipeline.config.targets")


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # one of our modules, or the dotted name of an outside one
    line: int
    module_level: bool

    def where(self, modules: dict[str, Path]) -> str:
        return f"{modules[self.source].relative_to(REPO)}:{self.line}"


def find_modules() -> dict[str, Path]:
    modules = {}
    for top in PRODUCT:
        for path in sorted((REPO / top).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _ours(name: str, modules: dict[str, Path]) -> str | None:
    """The longest of our modules that `name` is or lies in (`pipeline.sim.simulation` -> `pipeline.sim`)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in modules:
            return ".".join(parts[:end])
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    found: list[Import] = []
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]

    def targets(node: ast.Import | ast.ImportFrom) -> list[str]:
        if isinstance(node, ast.Import):
            return [alias.name for alias in node.names]
        base = node.module or ""
        if node.level:
            anchor = package[:len(package) - (node.level - 1)]
            base = ".".join(anchor + ([node.module] if node.module else []))
        # `from pkg import name`: the module pkg.name when there is one, else pkg itself.
        return [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]

    def walk(node: ast.AST, module_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.extend(Import(module, t, child.lineno, module_level) for t in targets(child))
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                walk(ast.Module(body=child.orelse, type_ignores=[]), module_level)  # the body never runs
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                walk(child, False)
            else:
                walk(child, module_level)

    walk(ast.parse(path.read_text(encoding="utf-8"), str(path)), True)
    return found


@pytest.fixture(scope="module")
def code():
    modules = find_modules()
    return modules, {m: imports_of(m, p, modules) for m, p in modules.items()}


def group_of(module: str) -> str | None:
    best, best_len = None, -1
    for group, prefixes in GROUPS.items():
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = group, len(prefix)
    return best


def _matches(module: str, rule: str) -> bool:
    return group_of(module) == rule if rule in GROUPS else module == rule or module.startswith(rule + ".")


def test_every_module_has_a_layer(code):
    modules, _ = code
    lost = sorted(m for m in modules if group_of(m) is None)
    assert not lost, (f"{lost}: place these in a layer in tests/test_layers.py (GROUPS) and in the README's "
                      "Layout section")


def test_no_import_cycles(code):
    modules, imports = code
    graph: dict[str, dict[str, Import]] = {m: {} for m in modules}
    for m, found in imports.items():
        for imp in found:
            target = _ours(imp.target, modules)
            if target is None:
                continue
            for runs in [*_packages(target), target]:  # importing a.b.c runs a/__init__, a/b/__init__, then a.b.c
                if runs != m and runs in modules and runs not in _packages(m):
                    graph[m].setdefault(runs, imp)
    described, known = [], set()
    for component, cycle in _cycles(graph):
        excused = [k for k in KNOWN_CYCLES if all(any(_matches(m, p) for p in k) for m in component)]
        if excused:
            known.update(excused)
            continue
        steps = [graph[a][b] for a, b in zip(cycle, cycle[1:] + cycle[:1])]
        described.append(" -> ".join(f"{s.source} ({s.where(modules)}{'' if s.module_level else ', in a function'})"
                                     for s in steps) + f" -> {cycle[0]}")
    assert not described, "import cycles:\n" + "\n".join(described)
    assert not set(KNOWN_CYCLES) - known, f"known cycles now broken, remove them: {set(KNOWN_CYCLES) - known}"


def _packages(module: str) -> list[str]:
    """The packages whose __init__ runs before `module` does: `a.b.c` -> [a, a.b]."""
    parts = module.split(".")
    return [".".join(parts[:end]) for end in range(1, len(parts))]


def _cycles(graph: dict[str, dict[str, Import]]) -> list[tuple[list[str], list[str]]]:
    """(modules, one cycle through them) per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return [(c, _a_cycle(graph, set(c))) for c in components]


def _a_cycle(graph: dict[str, dict[str, Import]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first within the component)."""
    start = min(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node]):
                if child not in component:
                    continue
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return path[::-1]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    return sorted(component)


def test_imports_follow_the_layers(code):
    modules, imports = code
    broken, used = [], set()
    for m, found in imports.items():
        group = group_of(m)
        for imp in found:
            target = _ours(imp.target, modules)
            if target is None or target == m or group is None:
                continue
            if any(_matches(target, rule) for rule in FORBIDDEN[group]):
                if (m, target) in ALLOWED:
                    used.add((m, target))
                    continue
                broken.append(f"{imp.where(modules)}: {m} ({group}) imports {target} ({group_of(target)})")
    assert not broken, "imports against the layers (README: Layout):\n" + "\n".join(sorted(broken))
    stale = sorted(set(ALLOWED) - used)
    assert not stale, f"these allowed exceptions are gone, remove them from ALLOWED: {stale}"


def test_only_entry_points_read_the_run_made_for_the_process(code):
    """MLFLOW_RUN_ID read (or set) below an entry point is an implicit protocol: a stage adopts whatever run the
    environment names, and it leaks into the next job. Filtering it out of a child's environment is fine."""
    modules, _ = code
    found = []
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
                key = node.args[0]  # os.environ.get/pop/setdefault("MLFLOW_RUN_ID"), os.getenv(...)
            elif isinstance(node, ast.Subscript):
                key = node.slice  # os.environ["MLFLOW_RUN_ID"]
            elif isinstance(node, ast.Dict) and any(isinstance(k, ast.Constant) and k.value == "MLFLOW_RUN_ID"
                                                    for k in node.keys):
                key = ast.Constant("MLFLOW_RUN_ID")  # os.environ.update({"MLFLOW_RUN_ID": ...}), a child's env
            else:
                continue
            if isinstance(key, ast.Constant) and key.value == "MLFLOW_RUN_ID" and module not in RUN_ID_ENTRY_POINTS:
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)[:120]}")
    assert not found, ("MLFLOW_RUN_ID used below the entry points (pass the run explicitly: "
                       "RunPlan.adopted_run_id, LaunchRequest.run_id):\n" + "\n".join(found))


def test_importing_config_loads_nothing_heavy(code):
    modules, imports = code
    for start in CHEAP:
        chain = _heavy_chain(start, modules, imports)
        assert chain is None, f"importing {start} loads {chain[-1]}: " + " -> ".join(chain)


def _heavy_chain(start: str, modules: dict[str, Path], imports: dict[str, list[Import]]) -> list[str] | None:
    """The module-level import chain from `start` to a heavy package, if there is one."""
    came_from: dict[str, str | None] = {start: None}
    queue = [start]
    while queue:
        m = queue.pop(0)
        nexts = [p for p in _packages(m) if p in modules]
        for imp in imports[m]:
            if not imp.module_level:
                continue
            target = _ours(imp.target, modules)
            if target is None:
                if imp.target.split(".")[0] in HEAVY:
                    chain = [f"{imp.target} ({imp.where(modules)})"]
                    while m is not None:
                        chain.append(m)
                        m = came_from[m]
                    return chain[::-1]
                continue
            nexts.append(target)
        for n in nexts:
            if n not in came_from:
                came_from[n] = m
                queue.append(n)
    return None


def test_the_product_imports_no_test_support(code):
    """requirements.lock (what the product installs) has none of requirements-test.lock's packages."""
    modules, imports = code
    test_only = {re.sub(r"[-.]", "_", line.split("==")[0].strip().lower())
                 for line in (REPO / "requirements-test.lock").read_text().splitlines()
                 if "==" in line and not line.startswith("#")}
    test_only |= {"tests", "_pytest", "conftest"}
    found = sorted(f"{imp.where(modules)}: {imp.target}" for m, found in imports.items() for imp in found
                   if imp.target.split(".")[0].lower() in test_only)
    assert not found, "the product imports test-only code:\n" + "\n".join(found)
    runtime = {line.split("==")[0].strip().lower() for line in (REPO / "requirements.lock").read_text().splitlines()
               if "==" in line and not line.startswith("#")}
    assert not runtime & {n.replace("_", "-") for n in test_only}, "a test-only package is in requirements.lock"
