"""The architecture's rules, checked on the source (docs/architecture.md): a test that walks every module's imports.

Standard library ``ast`` only. Each rule lists every violation it finds, one line each, so a failure says what to
fix. The checker itself is tested on a small package planted in a temporary directory (``test_checker_*``); the
allow-lists are checked for stale entries, so they shrink as the code is fixed.

The rules:

(a) ``core/`` imports nothing from boto3, botocore, ``aws/``, ``s3/``, ``local/`` or ``cli/``: at module level, inside
    functions (lazy) and under ``if TYPE_CHECKING:`` alike; ``importlib.import_module("...")`` with a literal counts.
(b) No import cycles between modules. Module-level and lazy imports are edges; ``TYPE_CHECKING`` imports are not.
    An import names one module (``from pkg import name`` is ``pkg.name`` when that is a module, else ``pkg``); the
    parent packages Python runs on the way are not edges (else everything would cycle through ``__init__``).
(c) No module over 450 lines.
(d) The layers, bottom to top (``LAYERS``): errors and core; config, keys, control, chain, shards, triggers; the
    package's root ``__init__`` (the public surface); aws, s3; local, testing (and the ``pytest_plugin`` shim); cli.
    A module imports only from its own layer or below (module level and lazy; ``TYPE_CHECKING`` imports are
    annotations and may point up), except the lazy composition points ``LAYER_ALLOWED`` lists with a reason (the
    production defaults built when the caller passes none); nothing outside ``cli/`` imports ``cli/``. ``local/`` and ``testing/`` import
    only the *public API* of other layers: a name in a package ``__init__``'s ``__all__`` (``recurse_lambda``,
    ``recurse_lambda.aws``, ``.s3``, ``.local``, ``.triggers``…), or a public name of a top-level single-file module
    (``errors``, ``config``, ``keys``, ``control``). Since the move to folders, modules such as ``chain/hop.py``
    carry no underscore, so "no leading underscore" would say nothing; "re-exported by a package" does.
(e) Nothing outside a class touches its private members: an attribute ``x._name`` (called or not) where ``x`` is
    not ``self``, ``cls`` or ``super()`` is reported, unless ``PRIVATE_ALLOWED`` lists it with a reason. Dunder
    names (``__dict__``) and the public ``_``-methods of the standard library (``_replace``, ``_asdict``…) pass.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "recurse_lambda"
MAX_LINES = 450

# (module prefix relative to the package, rank): the longest matching prefix wins; "" is the root __init__.
LAYERS: dict[str, float] = {
    "errors": 0,
    "core": 0,
    "config": 1,
    "keys": 1,
    "control": 1,
    "chain": 1,
    "shards": 1,
    "triggers": 1,
    "": 1.5,  # the root __init__: re-exports layers 0-1; aws, s3 and above may import it
    "aws": 2,
    "s3": 2,
    "local": 3,
    "testing": 3,
    "pytest_plugin": 3,
    "cli": 4,
}
PUBLIC_ONLY = ("local", "testing")  # these import only the public API of the other layers
CORE_FORBIDDEN_EXTERNAL = ("boto3", "botocore")
CORE_FORBIDDEN_INTERNAL = ("aws", "s3", "local", "cli")

# Names starting with "_" that are public API of the standard library (namedtuple, sys, os).
STDLIB_UNDERSCORE = frozenset(
    {"_replace", "_asdict", "_fields", "_make", "_field_defaults", "_exit", "_getframe"}
)

# (importer, target prefix), both relative to the package: the lazy imports that may point up a layer, and why.
# These are the composition points: where the library builds its production defaults when the caller passed none.
# Each stays inside a function (importing recurse_lambda creates no client and imports neither aws/ nor s3/).
LAYER_ALLOWED: dict[tuple[str, str], str] = {
    ("chain.warm", "aws"): "WarmState's default client factory: the one boto3 client cache (aws/clients.py)",
    ("keys", "aws"): "s3_object's default ETag lookup (a HEAD) when the caller injects none (etag_of=)",
    ("chain.handler", "aws"): (
        "the production World, built on the first invocation on Lambda when no world is given "
        "(RecursiveHandler.aws_world, and the container's RecursionGuard)"
    ),
    ("control", "aws"): (
        "ChainControl's documented defaults when the caller passes none: a Lambda invoker, and an S3 spill "
        "store when RECURSE_LAMBDA_SPILL_BUCKET is set"
    ),
    (
        "control",
        "s3",
    ): "ChainControl.cancel aborts the uploads of the outputs a cancelled chain's state holds",
    ("chain.run", "s3"): "Run.s3, the public door from a chunk to the s3 layer, created on first use",
    ("chain.warm", "s3"): "WarmState.cache, the container's S3Cache behind Run.s3, created on first use",
}

# (module relative to the package, "x._name" as written): why the access is allowed.
PRIVATE_ALLOWED: dict[tuple[str, str], str] = {
    ("local._scheduler", "self.clock._t"): (
        "Scheduler is VirtualClock's other half (the clock creates it and hands it control): resuming a thread "
        "moves the clock forward to that thread's time; a public setter would let a test move virtual time back"
    ),
}


# ---------------------------------------------------------------------------------------------- the checker


@dataclass(frozen=True)
class Import:
    importer: str  # the importing module, dotted, absolute
    target: str  # the imported module, dotted, absolute (ours or external)
    names: tuple[str, ...]  # the names taken by ``from target import ...``; () for ``import target``
    line: int
    kind: str  # "top" (module level), "lazy" (inside a function) or "type" (under ``if TYPE_CHECKING:``)

    def where(self, package: Package) -> str:
        return f"{package.path_of(self.importer)}:{self.line}"


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    lines: int
    is_package: bool


@dataclass
class Package:
    """Every module of one package on disk, and the imports each one makes."""

    root: Path
    name: str = ""
    modules: dict[str, Module] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.name = self.name or self.root.name
        for path in sorted(self.root.rglob("*.py")):
            parts = [self.name, *path.relative_to(self.root).with_suffix("").parts]
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            source = path.read_text(encoding="utf-8")
            name = ".".join(parts)
            self.modules[name] = Module(
                name, path, ast.parse(source, str(path)), len(source.splitlines()), is_package
            )

    def path_of(self, module: str) -> str:
        return str(self.modules[module].path.relative_to(self.root.parent))

    def relative(self, module: str) -> str:
        return module[len(self.name) + 1 :] if module != self.name else ""

    def ours(self, module: str) -> bool:
        return module == self.name or module.startswith(self.name + ".")

    def imports(self) -> Iterator[Import]:
        for module in self.modules.values():
            yield from self._imports_of(module)

    def _imports_of(self, module: Module) -> Iterator[Import]:
        package = module.name if module.is_package else module.name.rpartition(".")[0]

        def resolve(level: int, target: str | None) -> str:
            if level == 0:
                return target or ""
            base = package.split(".")
            base = base[: len(base) - (level - 1)]
            return ".".join([*base, *([target] if target else [])])

        def visit(node: ast.AST, kind: str) -> Iterator[Import]:
            for child in ast.iter_child_nodes(node):
                child_kind = kind
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and kind == "top":
                    child_kind = "lazy"
                if isinstance(child, ast.If) and _is_type_checking(child.test):
                    for stmt in child.body:
                        yield from visit_one(stmt, "type")
                    for stmt in child.orelse:
                        yield from visit_one(stmt, kind)
                    continue
                yield from visit_one(child, child_kind)

        def visit_one(node: ast.AST, kind: str) -> Iterator[Import]:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(module.name, alias.name, (), node.lineno, kind)
            elif isinstance(node, ast.ImportFrom):
                base = resolve(node.level, node.module)
                plain = tuple(a.name for a in node.names if f"{base}.{a.name}" not in self.modules)
                for alias in node.names:
                    if f"{base}.{alias.name}" in self.modules:  # ``from pkg import submodule``
                        yield Import(module.name, f"{base}.{alias.name}", (), node.lineno, kind)
                if plain:
                    yield Import(module.name, base, plain, node.lineno, kind)
            elif isinstance(node, ast.Call) and _dynamic_import(node) is not None:
                yield Import(module.name, str(_dynamic_import(node)), (), node.lineno, "lazy")
            yield from visit(node, kind)

        yield from visit(module.tree, "top")

    def layer_of(self, module: str) -> tuple[str, float]:
        rel = self.relative(module)
        best = max((p for p in LAYERS if p == "" or rel == p or rel.startswith(p + ".")), key=len)
        return best, LAYERS[best]

    def public_names(self, module: str) -> set[str] | None:
        """The public API a module offers other layers: a package's ``__all__``, a top-level module's public
        names; None when the module is not an entry point (a module inside a layer's folder)."""
        found = self.modules.get(module)
        if found is None:
            return None
        if found.is_package:
            return _all_of(found.tree)
        if module.count(".") == 1:  # recurse_lambda.errors, .config, .keys, .control
            return {n for n in _defined_names(found.tree) if not n.startswith("_")}
        return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _dynamic_import(call: ast.Call) -> str | None:
    """``importlib.import_module("x")`` or ``__import__("x")`` with a literal name."""
    func = call.func
    named = (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
        isinstance(func, ast.Name) and func.id in ("import_module", "__import__")
    )
    if named and call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str):
        return call.args[0].value
    return None


def _all_of(tree: ast.Module) -> set[str]:
    for node in tree.body:
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AnnAssign)
            else []
        )
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets) and node.value is not None:
            return {
                e.value
                for e in ast.walk(node.value)
                if isinstance(e, ast.Constant) and isinstance(e.value, str)
            }
    return {n for n in _defined_names(tree) if not n.startswith("_")}


def _defined_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(e.id for t in targets for e in ast.walk(t) if isinstance(e, ast.Name))
    return names


# ---------------------------------------------------------------------------------------------- the rules


def core_purity(package: Package) -> list[str]:
    """(a) core/ imports no boto3, botocore, aws/, s3/, local/, cli/ (module level, lazy, TYPE_CHECKING)."""
    forbidden_ours = tuple(f"{package.name}.{p}" for p in CORE_FORBIDDEN_INTERNAL)
    found = []
    for imp in package.imports():
        if not imp.importer.startswith(f"{package.name}.core"):
            continue
        external = imp.target.split(".")[0] in CORE_FORBIDDEN_EXTERNAL
        internal = any(imp.target == p or imp.target.startswith(p + ".") for p in forbidden_ours)
        if external or internal:
            found.append(f"{imp.where(package)}: {imp.importer} imports {imp.target} ({imp.kind})")
    return found


def import_cycles(package: Package) -> list[str]:
    """(b) Strongly connected components of the module graph (module-level and lazy imports)."""
    graph: dict[str, set[str]] = {m: set() for m in package.modules}
    for imp in package.imports():
        if imp.kind != "type" and imp.target in graph and imp.target != imp.importer:
            graph[imp.importer].add(imp.target)
    found = []
    for component in _strongly_connected(graph):
        if len(component) > 1:
            members = set(component)
            cycle = _one_cycle(graph, min(component), members)
            found.append(
                f"cycle of {len(component)} modules: {' -> '.join(cycle)} (all: {', '.join(sorted(component))})"
            )
    return sorted(found)


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan; the package is small enough for recursion
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
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
            out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def _one_cycle(graph: dict[str, set[str]], start: str, members: set[str]) -> list[str]:
    """A shortest path from ``start`` back to itself inside one component (breadth first)."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if w not in parents:
                    parents[w] = v
                    nxt.append(w)
        frontier = nxt
    return [start]


def long_modules(package: Package, limit: int = MAX_LINES) -> list[str]:
    """(c) Modules over ``limit`` lines."""
    return [
        f"{package.path_of(m.name)}: {m.lines} lines (limit {limit})"
        for m in package.modules.values()
        if m.lines > limit
    ]


def layer_violations(package: Package) -> list[str]:
    """(d) Imports that point up the layers, into cli/, or (from local/, testing/) past the public API."""
    found = []
    for imp in package.imports():
        if not package.ours(imp.target) or imp.target not in package.modules:
            continue
        src_layer, src_rank = package.layer_of(imp.importer)
        dst_layer, dst_rank = package.layer_of(imp.target)
        label = f"{imp.where(package)}: {imp.importer} ({src_layer or 'root'}) imports {imp.target}"
        if dst_layer == "cli" and src_layer != "cli":
            found.append(f"{label}: nothing outside cli/ imports cli/ ({imp.kind})")
        elif imp.kind != "type" and dst_rank > src_rank and not _layer_allowed(package, imp):
            found.append(f"{label} ({dst_layer or 'root'}), a higher layer ({imp.kind})")
        if src_layer in PUBLIC_ONLY and dst_layer != src_layer and dst_rank <= src_rank:
            public = package.public_names(imp.target)
            private = list(imp.names) if public is None else [n for n in imp.names if n not in public]
            if public is None and not imp.names:
                found.append(f"{label}: not a public entry point ({imp.kind})")
            elif private:
                hints = ", ".join(f"{n}{_where_public(package, n)}" for n in private)
                found.append(f"{label}: not its public API: {hints} ({imp.kind})")
    return found


def _layer_allowed(package: Package, imp: Import, allowed: dict[tuple[str, str], str] | None = None) -> bool:
    allowed = LAYER_ALLOWED if allowed is None else allowed
    src, dst = package.relative(imp.importer), package.relative(imp.target)
    return imp.kind == "lazy" and any(src == a and (dst == b or dst.startswith(b + ".")) for a, b in allowed)


def _where_public(package: Package, name: str) -> str:
    homes = sorted(m for m in package.modules if (package.public_names(m) or set()) & {name})
    return f" (public in {homes[0]})" if homes else " (public nowhere)"


def private_access(package: Package, allowed: dict[tuple[str, str], str] | None = None) -> list[str]:
    """(e) ``x._name`` where ``x`` is not ``self``/``cls``/``super()``, outside ``allowed``."""
    allowed = PRIVATE_ALLOWED if allowed is None else allowed
    found: list[tuple[str, int, str]] = []
    for module in package.modules.values():
        for node in ast.walk(module.tree):
            if not isinstance(node, ast.Attribute):
                continue
            attr = node.attr
            if not attr.startswith("_") or (attr.startswith("__") and attr.endswith("__")):
                continue
            if attr in STDLIB_UNDERSCORE:
                continue
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "super":
                continue
            text = f"{ast.unparse(owner)}.{attr}"
            if (package.relative(module.name), text) in allowed:
                continue
            found.append((module.name, node.lineno, text))
    return [f"{package.path_of(m)}:{line}: {text}" for m, line, text in sorted(set(found))]


# ---------------------------------------------------------------------------------------------- the rules on our code


@pytest.fixture(scope="module")
def package() -> Package:
    return Package(PACKAGE_DIR)


def _report(found: list[str], rule: str) -> None:
    assert not found, f"{rule}: {len(found)} violation(s):\n  " + "\n  ".join(found)


def test_core_imports_no_aws_s3_local_cli(package: Package) -> None:
    _report(core_purity(package), "(a) core purity")


def test_no_import_cycles(package: Package) -> None:
    _report(import_cycles(package), "(b) import cycles")


def test_no_module_over_450_lines(package: Package) -> None:
    _report(long_modules(package), "(c) module length")


def test_layers_point_down(package: Package) -> None:
    _report(layer_violations(package), "(d) layers")


def test_no_private_access_from_outside(package: Package) -> None:
    _report(private_access(package), "(e) private access")


def test_every_module_has_a_layer(package: Package) -> None:
    unplaced = [m for m in package.modules if package.layer_of(m)[0] == "" and m != package.name]
    _report(unplaced, "modules with no layer in LAYERS")


def test_private_allow_list_is_current(package: Package) -> None:
    """Every allowed private access still exists: the list shrinks as the code is fixed."""
    seen = set()
    for module in package.modules.values():
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Attribute):
                seen.add((package.relative(module.name), f"{ast.unparse(node.value)}.{node.attr}"))
    stale = [f"{m}: {t}" for m, t in PRIVATE_ALLOWED if (m, t) not in seen]
    _report(stale, "stale PRIVATE_ALLOWED entries")


def test_layer_allow_list_is_current(package: Package) -> None:
    """Every allowed upward import still exists, lazily: the list shrinks as the code is fixed."""
    used = {
        (a, b)
        for imp in package.imports()
        for a, b in LAYER_ALLOWED
        if _layer_allowed(package, imp, {(a, b): ""})
    }
    _report([f"{a} -> {b}" for a, b in LAYER_ALLOWED if (a, b) not in used], "stale LAYER_ALLOWED entries")


# ---------------------------------------------------------------------------------------------- the checker, tested


def _plant(tmp_path: Path, files: dict[str, str]) -> Package:
    root = tmp_path / "pkg"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    for folder in {p for p in root.rglob("*") if p.is_dir()} | {root}:
        (folder / "__init__.py").touch()
    return Package(root)


CLEAN = {
    "__init__.py": "from .chain.run import Run\n__all__ = ['Run']\n",
    "errors.py": "class Oops(Exception): ...\n",
    "core/model.py": "from ..errors import Oops\n",
    "chain/run.py": (
        "from typing import TYPE_CHECKING\n"
        "from ..core import model\n"
        "if TYPE_CHECKING:\n"
        "    from ..aws.world import World\n"
        "class Run:\n"
        "    def _step(self): return self._n\n"
        "    def go(self): return self._step()\n"
    ),
    "aws/world.py": "import boto3\nfrom ..chain.run import Run\n",
    "local/sim.py": "from .. import Run\nfrom ..errors import Oops\n",
    "cli/main.py": "from ..local import sim\n",
}


def test_checker_passes_a_clean_package(tmp_path: Path) -> None:
    pkg = _plant(tmp_path, CLEAN)
    assert core_purity(pkg) == []
    assert import_cycles(pkg) == []
    assert long_modules(pkg) == []
    assert layer_violations(pkg) == []
    assert private_access(pkg, {}) == []


def test_checker_finds_core_imports_lazy_and_typed(tmp_path: Path) -> None:
    pkg = _plant(
        tmp_path,
        {
            **CLEAN,
            "core/model.py": (
                "from typing import TYPE_CHECKING\n"
                "import botocore.exceptions\n"
                "if TYPE_CHECKING:\n"
                "    from ..local.sim import Run\n"
                "def f():\n"
                "    import boto3\n"
                "    from ..s3 import reader\n"
                "    from .. import cli\n"
                "    import importlib; importlib.import_module('pkg.aws.world')\n"
            ),
            "s3/reader.py": "",
        },
    )
    found = "\n".join(core_purity(pkg))
    for expected in (
        "imports botocore.exceptions (top)",
        "imports pkg.local.sim (type)",
        "imports boto3 (lazy)",
        "imports pkg.s3.reader (lazy)",
        "imports pkg.cli (lazy)",
        "imports pkg.aws.world (lazy)",
    ):
        assert expected in found
    assert len(core_purity(pkg)) == 6


def test_checker_finds_cycles_but_not_type_checking_ones(tmp_path: Path) -> None:
    pkg = _plant(
        tmp_path,
        {
            **CLEAN,
            "chain/a.py": "from . import b\n",
            "chain/b.py": "def f():\n    from .c import x\n",
            "chain/c.py": "from .a import y\n",
            "chain/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .e import z\n",
            "chain/e.py": "from .d import w\n",
        },
    )
    found = import_cycles(pkg)
    assert found == [
        "cycle of 3 modules: pkg.chain.a -> pkg.chain.b -> pkg.chain.c -> pkg.chain.a "
        "(all: pkg.chain.a, pkg.chain.b, pkg.chain.c)"
    ]


def test_checker_finds_long_modules(tmp_path: Path) -> None:
    pkg = _plant(tmp_path, {**CLEAN, "chain/long.py": "x = 1\n" * 451, "chain/ok.py": "x = 1\n" * 450})
    assert long_modules(pkg) == ["pkg/chain/long.py: 451 lines (limit 450)"]


def test_checker_finds_layer_violations(tmp_path: Path) -> None:
    pkg = _plant(
        tmp_path,
        {
            **CLEAN,
            "chain/up.py": "def f():\n    from ..s3 import reader\n",  # lazy, still up
            "chain/typed.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..s3.reader import R\n",
            "s3/reader.py": "from ..cli.main import x\nclass R: ...\n",  # into cli
            "local/deep.py": "from ..chain.run import Run\nfrom ..errors import _hidden\nfrom ..chain import run\n",
            "local/__init__.py": "from .sim import Sim\n__all__ = ['Sim']\n",
            "local/sim.py": "from .. import Run\nclass Sim: ...\n",
            "testing/ok.py": "from ..local import Sim\nfrom .. import Run\n",
        },
    )
    found = layer_violations(pkg)
    joined = "\n".join(found)
    assert "pkg.chain.up (chain) imports pkg.s3.reader (s3), a higher layer (lazy)" in joined
    assert "pkg.s3.reader (s3) imports pkg.cli.main: nothing outside cli/ imports cli/" in joined
    assert (
        "pkg.local.deep (local) imports pkg.chain.run: not its public API: Run (public in pkg) (top)"
        in joined
    )
    assert "imports pkg.errors: not its public API: _hidden (public nowhere)" in joined
    assert "imports pkg.chain.run: not a public entry point (top)" in joined
    assert "chain.typed" not in joined and "testing.ok" not in joined
    assert len(found) == 5


def test_checker_layer_allow_list_covers_lazy_imports_only(tmp_path: Path) -> None:
    pkg = _plant(
        tmp_path,
        {
            **CLEAN,
            "chain/handler.py": "def world():\n    from ..aws.world import World\n",
            "chain/eager.py": "from ..aws.world import World\n",
            "control.py": "def f():\n    from .aws import world\n",
        },
    )
    allowed = {("chain.handler", "aws"): "", ("chain.eager", "aws"): ""}
    found = [imp for imp in pkg.imports() if imp.target.startswith("pkg.aws")]
    verdicts = {(imp.importer, _layer_allowed(pkg, imp, allowed)) for imp in found}
    assert ("pkg.chain.handler", True) in verdicts
    assert ("pkg.chain.eager", False) in verdicts  # allowed lazily only
    assert ("pkg.control", False) in verdicts  # not listed


def test_checker_finds_private_access(tmp_path: Path) -> None:
    pkg = _plant(
        tmp_path,
        {
            **CLEAN,
            "chain/peek.py": (
                "def f(hop, t):\n"
                "    hop._finish()\n"
                "    x = hop.world._cache\n"
                "    t._replace(a=1); t.__dict__; super().__init__\n"
                "    return hop._allowed\n"
            ),
        },
    )
    assert private_access(pkg, {}) == [
        "pkg/chain/peek.py:2: hop._finish",
        "pkg/chain/peek.py:3: hop.world._cache",
        "pkg/chain/peek.py:5: hop._allowed",
    ]
    assert len(private_access(pkg, {("chain.peek", "hop._allowed"): "a reason"})) == 2
