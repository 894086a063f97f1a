"""The package's import graph, read with ``ast``: layers, cycles, upward and function-local imports, and
each DVC stage's code closure (the modules a stage runs, which its ``dvc.yaml`` deps must cover).

Pure analysis of source text: nothing is imported, so it runs on a tree whose dependencies are not installed.
``python -m pipelines.devtools.import_graph`` (``make graph``) prints the report; ``loopline dvc-deps --check`` /
``--write`` keeps ``dvc.yaml`` true.
"""

from __future__ import annotations

import ast
import shlex
import sys
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipelines.core.errors import InputError

PACKAGE = "pipelines"
CLI_MODULE = "pipelines.cli"
DEPS_MARKER = "pipelines/"


@dataclass(frozen=True)
class Import:
    """One internal import statement (one target module)."""

    source: str
    target: str
    lineno: int
    local: bool  # inside a function body: runs when the function does, not when the module loads
    type_only: bool  # under ``if TYPE_CHECKING:``: never runs
    reason: str  # the comment on the import's line, or on the line above it


@dataclass
class Graph:
    modules: dict[str, Path]
    imports: list[Import]
    lines: dict[str, int] = field(default_factory=dict)

    def edges(self, *, include_local: bool = True) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {m: set() for m in self.modules}
        for imp in self.imports:
            if imp.type_only or (imp.local and not include_local) or imp.target == imp.source:
                continue
            out[imp.source].add(imp.target)
        return out


def discover(root: Path, package: str = PACKAGE) -> dict[str, Path]:
    """Module name -> file for every ``.py`` under ``root/package``."""
    base = root / package
    modules: dict[str, Path] = {}
    for path in sorted(base.rglob("*.py")):
        rel = path.relative_to(root).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _is_package(name: str, modules: Mapping[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def _resolve(name: str, modules: Mapping[str, Path]) -> str | None:
    """The innermost known module that ``name`` names or lies in."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _from_target(base: str, name: str, modules: Mapping[str, Path]) -> str | None:
    """The module ``from base import name`` loads: the submodule if ``name`` is one, else ``base``'s."""
    sub = f"{base}.{name}"
    return sub if sub in modules else _resolve(base, modules)


def _comment(lines: list[str], lineno: int) -> str:
    line = lines[lineno - 1]
    if "#" in line:
        return line.split("#", 1)[1].strip()
    above = lines[lineno - 2].strip() if lineno >= 2 else ""
    return above[1:].strip() if above.startswith("#") else ""


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, modules: Mapping[str, Path], lines: list[str]) -> None:
        self.module = module
        self.modules = modules
        self.lines = lines
        self.depth = 0
        self.type_only = 0
        self.found: list[Import] = []

    def _add(self, target: str | None, node: ast.stmt) -> None:
        if target is None or any(f.lineno == node.lineno and f.target == target for f in self.found):
            return
        self.found.append(
            Import(
                source=self.module,
                target=target,
                lineno=node.lineno,
                local=self.depth > 0,
                type_only=self.type_only > 0,
                reason=_comment(self.lines, node.lineno),
            )
        )

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            self.type_only += 1
            for stmt in node.body:
                self.visit(stmt)
            self.type_only -= 1
            for stmt in node.orelse:
                self.visit(stmt)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(_resolve(alias.name, self.modules), node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            package = self.module if _is_package(self.module, self.modules) else self.module.rsplit(".", 1)[0]
            parts = package.split(".")
            base_parts = parts[: len(parts) - (node.level - 1)]
            base = ".".join(base_parts + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        if not (base == PACKAGE or base.startswith(PACKAGE + ".")):
            return
        for alias in node.names:
            self._add(_from_target(base, alias.name, self.modules), node)


def read_graph(root: Path, package: str = PACKAGE) -> Graph:
    modules = discover(root, package)
    graph = Graph(modules=modules, imports=[])
    for name, path in modules.items():
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        graph.lines[name] = len(lines)
        collector = _Collector(name, modules, lines)
        collector.visit(ast.parse(text, filename=str(path)))
        graph.imports.extend(collector.found)
    return graph


def _parents(name: str, modules: Mapping[str, Path]) -> list[str]:
    """The packages whose ``__init__`` runs before ``name`` does."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in modules]


def closure(graph: Graph, starts: Iterable[str], *, opaque: Iterable[str] = ()) -> set[str]:
    """Every module that may run when ``starts`` run: imports at the top and inside functions, and the
    ``__init__`` of each package on the way. ``opaque`` modules are included but their imports not followed
    (the CLI modules, whose commands are followed one by one instead)."""
    edges = graph.edges(include_local=True)
    stop = set(opaque)
    seen: set[str] = set()
    todo = list(starts)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name not in stop:
            todo.extend(edges.get(name, ()))
        todo.extend(_parents(name, graph.modules))
    return seen


def cycles(graph: Graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative), each sorted."""
    edges = graph.edges(include_local=True)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work: list[tuple[str, Iterable[str]]] = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
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
                    found.append(sorted(component))
    return sorted(found)


def depth_layers(graph: Graph) -> dict[str, int]:
    """Each module's layer: 0 for a module that imports nothing internal, else 1 + its deepest import's
    (modules of one cycle share a layer)."""
    edges = graph.edges(include_local=True)
    group = {m: m for m in edges}
    for component in cycles(graph):
        for member in component:
            group[member] = component[0]
    memo: dict[str, int] = {}

    def layer(name: str, trail: frozenset[str]) -> int:
        key = group[name]
        if key in memo:
            return memo[key]
        members = [m for m in edges if group[m] == key]
        deps = {group[t] for m in members for t in edges[m]} - {key}
        value = 1 + max((layer(d, trail | {key}) for d in deps if d not in trail), default=-1)
        memo[key] = value
        return value

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    return {m: layer(m, frozenset()) for m in edges}


# -- the declared layers (import-linter's contracts in pyproject.toml) ---------------------------------------


def declared_layers(pyproject: Path) -> list[list[str]]:
    """The ``layers`` of the first layers contract naming the package, top first; each layer a list of
    module names (import-linter writes siblings as ``a | b`` or ``a : b``)."""
    config = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    contracts = config.get("tool", {}).get("importlinter", {}).get("contracts", [])
    for contract in contracts:
        if contract.get("type") != "layers":
            continue
        container = contract.get("containers", [])
        prefix = f"{container[0]}." if container else ""
        layers = []
        for entry in contract["layers"]:
            names = [p.strip().strip("()") for p in entry.replace(":", "|").split("|")]
            layers.append([prefix + n for n in names if n])
        return layers
    return []


def upward_imports(graph: Graph, layers: list[list[str]]) -> list[Import]:
    """Imports from a module to one in a higher declared layer (top first), type-only imports excluded."""
    rank: dict[str, int] = {}
    for position, layer in enumerate(layers):
        for name in layer:
            rank[name] = position

    def position_of(module: str) -> int | None:
        parts = module.split(".")
        while parts:
            if ".".join(parts) in rank:
                return rank[".".join(parts)]
            parts.pop()
        return None

    found = []
    for imp in graph.imports:
        if imp.type_only:
            continue
        a, b = position_of(imp.source), position_of(imp.target)
        if a is not None and b is not None and b < a:
            found.append(imp)
    return found


# -- DVC stages: the code each one runs ----------------------------------------------------------------------


def _command_name(func: ast.FunctionDef) -> str | None:
    for deco in func.decorator_list:
        if not (isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute)):
            continue
        if deco.func.attr != "command":
            continue
        if deco.args and isinstance(deco.args[0], ast.Constant):
            return str(deco.args[0].value)
        for kw in deco.keywords:
            if kw.arg == "name" and isinstance(kw.value, ast.Constant):
                return str(kw.value.value)
        return func.name.replace("_", "-")
    return None


def _top_level_names(tree: ast.Module, graph: Graph) -> dict[str, set[str]]:
    """Names bound by the module's top-level internal imports -> the modules reached through each one
    (``import pipelines.a`` and ``import pipelines.b`` both bind ``pipelines``, which then reaches both)."""
    names: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                target = _from_target(node.module, alias.name, graph.modules)
                if target is not None:
                    names.setdefault(alias.asname or alias.name, set()).add(target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(alias.name, graph.modules)
                if target is not None:
                    names.setdefault(alias.asname or alias.name.split(".")[0], set()).add(target)
    return names


def cli_modules(graph: Graph) -> list[str]:
    """The CLI module, or the CLI package and its modules."""
    return sorted(m for m in graph.modules if m == CLI_MODULE or m.startswith(CLI_MODULE + "."))


def _defines_commands(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(isinstance(n, ast.FunctionDef) and _command_name(n) is not None for n in tree.body)


def command_entries(graph: Graph) -> dict[str, set[str]]:
    """Each CLI command -> the module that defines it and the internal modules its function reaches: what it
    imports inside itself, the modules it names through its module's top-level imports, and the same for the
    helper functions of that module it calls (transitively)."""
    commands: dict[str, set[str]] = {}
    for module in cli_modules(graph):
        tree = ast.parse(graph.modules[module].read_text(encoding="utf-8"))
        names = _top_level_names(tree, graph)
        functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
        local = {imp.lineno: imp.target for imp in graph.imports if imp.source == module and imp.local}

        def reached(
            func: ast.FunctionDef, seen: set[str], names=names, functions=functions, local=local
        ) -> set[str]:  # type: ignore[no-untyped-def]
            out: set[str] = set()
            for node in ast.walk(func):
                if isinstance(node, ast.Import | ast.ImportFrom) and node.lineno in local:
                    out.add(local[node.lineno])
                elif isinstance(node, ast.Name):
                    if node.id in names:
                        out |= names[node.id]
                    elif node.id in functions and node.id not in seen:
                        seen.add(node.id)
                        out |= reached(functions[node.id], seen)
            return out

        for func in functions.values():
            name = _command_name(func)
            if name is not None:
                commands[name] = reached(func, {func.name}) | {module}
    return commands


def stage_commands(dvc_yaml: Path) -> dict[str, str]:
    """DVC stage -> the ``loopline`` command its ``cmd`` runs."""
    stages = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")).get("stages", {})
    out = {}
    for stage, spec in stages.items():
        words = shlex.split(str(spec["cmd"]))
        if len(words) >= 2 and words[0] == "loopline":
            out[stage] = words[1]
    return out


def module_file(graph: Graph, module: str, root: Path) -> str:
    return graph.modules[module].relative_to(root).as_posix()


def stage_code(root: Path, dvc_yaml: Path | None = None) -> dict[str, list[str]]:
    """DVC stage -> the files of every module its command may run, sorted.

    That is the CLI's root module and the closure of its top-level imports (they run for every command), the
    module defining the command, and the closure of every module the command's function reaches. A CLI
    module's imports that the command never reaches are not followed: modules do no work on import, so code
    the command does not call cannot change its results.
    """
    graph = read_graph(root)
    if CLI_MODULE not in graph.modules:
        raise InputError(f"{root}: no {PACKAGE}/cli here; run from the project root or pass --root")
    entries = command_entries(graph)
    defining = {m for m in cli_modules(graph) if _defines_commands(graph.modules[m])}
    cli_top = {imp.target for imp in graph.imports if imp.source == CLI_MODULE and not imp.local}
    out = {}
    for stage, command in stage_commands(dvc_yaml or root / "dvc.yaml").items():
        if command not in entries:
            raise InputError(
                f"dvc.yaml: stage {stage!r} runs 'loopline {command}', which the CLI does not define"
            )
        modules = closure(graph, {CLI_MODULE} | cli_top | entries[command], opaque=defining | {CLI_MODULE})
        out[stage] = sorted(module_file(graph, m, root) for m in modules)
    return out


def declared_code_deps(dvc_yaml: Path) -> dict[str, list[str]]:
    """DVC stage -> its deps under ``pipelines/`` as written."""
    stages = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")).get("stages", {})
    return {
        stage: [str(d) for d in spec.get("deps", []) if str(d).startswith(DEPS_MARKER)]
        for stage, spec in stages.items()
    }


def missing_deps(root: Path, dvc_yaml: Path | None = None) -> dict[str, list[str]]:
    """DVC stage -> the files its command runs that no dep covers (a dep may name a file or a folder)."""
    dvc_yaml = dvc_yaml or root / "dvc.yaml"
    declared = declared_code_deps(dvc_yaml)
    out = {}
    for stage, files in stage_code(root, dvc_yaml).items():
        deps = [d.rstrip("/") for d in declared.get(stage, [])]
        missing = [f for f in files if not any(f == d or f.startswith(d + "/") for d in deps)]
        if missing:
            out[stage] = missing
    return out


def write_deps(dvc_yaml: Path, code: Mapping[str, list[str]]) -> str:
    """``dvc.yaml``'s text with each stage's ``pipelines/`` deps replaced by ``code[stage]`` (after its other
    deps, in the order given); everything else, comments included, is kept as written."""
    lines = dvc_yaml.read_text(encoding="utf-8").splitlines(keepends=True)
    out: list[str] = []
    stage: str | None = None
    in_stages = in_deps = False
    item = ""
    done: set[str] = set()

    def flush() -> None:
        if stage is not None and in_deps and stage in code:
            out.extend(f"{item}{f}\n" for f in code[stage])
            done.add(stage)

    for line in lines:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip(" "))
        if in_deps and stripped.startswith("- "):
            item = line[: line.index("-") + 2]
            if stripped[2:].strip().startswith(DEPS_MARKER):
                continue
            out.append(line)
            continue
        if in_deps and stripped and not stripped.startswith("#"):
            flush()
            in_deps = False
        if indent == 0 and stripped:
            in_stages = stripped == "stages:"
            stage = None
        elif in_stages and indent == 2 and stripped.endswith(":") and not stripped.startswith("#"):
            stage = stripped[:-1]
        elif stage is not None and indent == 4 and stripped == "deps:":
            in_deps = True
            item = " " * 6 + "- "
        out.append(line)
    flush()
    absent = sorted(set(code) - done)
    if absent:
        raise InputError(f"{dvc_yaml}: no deps list for stage(s) {', '.join(absent)}; add `deps:` to each")
    return "".join(out)


# -- the report ----------------------------------------------------------------------------------------------


@dataclass
class Figures:
    modules: int
    lines: int
    import_statements: int
    depth: dict[str, int]
    cycles: list[list[str]]
    upward: list[Import]
    local: list[Import]
    largest: str
    largest_lines: int
    declared: list[list[str]] = field(default_factory=list)  # the layers contract, top first

    @property
    def layers(self) -> int:
        return 1 + max(self.depth.values(), default=-1)


def report(root: Path) -> Figures:
    graph = read_graph(root)
    biggest = max(graph.lines, key=lambda m: graph.lines[m])
    declared = declared_layers(root / "pyproject.toml")
    return Figures(
        modules=len(graph.modules),
        lines=sum(graph.lines.values()),
        import_statements=len(graph.imports),
        depth=depth_layers(graph),
        cycles=cycles(graph),
        upward=upward_imports(graph, declared),
        local=[i for i in graph.imports if i.local and not i.type_only],
        largest=biggest,
        largest_lines=graph.lines[biggest],
        declared=declared,
    )


def format_report(f: Figures) -> str:
    total = f.import_statements
    out = [
        f"modules: {f.modules} ({f.lines} lines); internal import statements: {total}",
        f"layers (longest import chain): {f.layers}",
    ]
    for level in sorted(set(f.depth.values()), reverse=True):
        out.append(f"  {level:2d}: " + ", ".join(sorted(m for m, d in f.depth.items() if d == level)))
    out.append(f"declared layers (pyproject.toml, top first): {len(f.declared)}")
    out += ["  " + " | ".join(layer) for layer in f.declared]
    out.append(f"cycles: {len(f.cycles)}")
    out += ["  " + " <-> ".join(c) for c in f.cycles]
    out.append(f"upward imports (against the declared layers): {len(f.upward)}")
    out += [f"  {i.source} -> {i.target} (line {i.lineno})" for i in f.upward]
    share = 100 * len(f.local) / max(total, 1)
    out.append(f"function-local internal imports: {len(f.local)} of {total} ({share:.1f}%)")
    out += [
        f"  {i.source}:{i.lineno} -> {i.target}" + (f"  # {i.reason}" if i.reason else "") for i in f.local
    ]
    out.append(
        f"largest module: {f.largest} ({f.largest_lines} lines, "
        f"{100 * f.largest_lines / max(f.lines, 1):.1f}% of the package)"
    )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    root = Path(argv[0]) if argv else Path(__file__).resolve().parents[2]
    print(format_report(report(root)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
