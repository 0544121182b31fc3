"""The layers of mesh/: who may import whom, what the pure folders may touch, private names.

mesh/ is split into folders by layer, lowest first: the base (``_errors``, ``_config``),
``_util``, ``_core``, ``_wire``, ``_io``, ``_rpc``, ``_node``, then the public surface
(``__init__``, ``sync``, ``testing``). :func:`check` walks every module with ``ast``
(imports at any depth, ``if TYPE_CHECKING:`` ones too) and reports:

- ``upward``: a module imports one from a layer above its own;
- ``impure``: a module of a pure folder (``_util``, ``_core``, ``_wire``) imports asyncio, zmq,
  zeroconf, sqlite3, socket, threading or os, reads ``time.<anything>``, or calls a
  ``random.<function>`` (``random.Random`` for an injected generator is fine);
- ``private``: a module uses a name private to another module of the package: ``from x
  import _y``, ``mod._y`` on an imported module, or ``obj._y`` where ``obj`` is a name imported
  from another module, a parameter annotated with such a type, or ``self.attr`` holding one
  (``_replace``, ``_asdict`` and the like are public API of named tuples and stay allowed;
  classes of one module may use each other's private names);
- ``unplaced``: a top-level module that belongs to no layer.

Today's known violations are listed below, each with why it is there and when it goes; the
test fails on any new one, and on a listed one that no longer occurs (strike it then).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Lowest first; a module may import its own layer and those below it.
LAYERS = ("base", "_util", "_core", "_wire", "_io", "_rpc", "_node", "public")
BASE = frozenset({"_errors", "_config"})
PUBLIC = frozenset({"__init__", "sync", "testing"})
PURE = frozenset({"_util", "_core", "_wire"})
IMPURE_MODULES = frozenset({"asyncio", "zmq", "zeroconf", "sqlite3", "socket", "threading", "os"})
#: Underscore names that are public API (named tuples, enums).
ALLOWED_PRIVATE = frozenset(
    {"_replace", "_asdict", "_fields", "_make", "_field_defaults", "_value_", "_name_", "_missing_"}
)

#: Known upward imports: (module, imported module) -> why; to remove in stage 2/3.
KNOWN_UPWARD: dict[tuple[str, str], str] = {
    ("_config", "_util.keys"): "Security settings check keys at construction; stage 3 moves it",
    ("_config", "_io.interfaces"): "interfaces= resolves addresses in Config; stage 2 moves it",
    (
        "_core.catalog",
        "_rpc.services",
    ): "the catalog lists a ServiceSpec; stage 2 passes plain data",
}

#: Known impurities of the pure folders: (module, what) -> why; to remove in stage 2/3.
KNOWN_IMPURE: dict[tuple[str, str], str] = {
    ("_util.aio", "asyncio"): "asyncio wait helpers; stage 3 (Clock) decides their folder",
    ("_util.deadlines", "asyncio"): "a deadline queue on loop timers; stage 3 decides its folder",
    ("_util.deadlines", "time.get_clock_info"): "clock resolution; stage 3 takes it from the Clock",
}

#: Known uses of another module's private names: module -> names; stage 2 empties this.
KNOWN_PRIVATE: dict[str, set[str]] = {
    "_node.eventbus": {"_core.events._Topic"},
    "_node.jobrunner": {
        "Node._codec",
        "Node._events",
        "Node._jobs",
        "Node._reply_error",
        "Node._reply_error_or",
        "Node._services",
        "Node._spawn",
    },
    "_node.remote": {"Node._events", "Node._joins"},
    "testing": {
        "_rpc.services._METHOD_ATTR",
        "_rpc.services._MethodMeta",
        "_rpc.services._SERVICE_ATTR",
        "_rpc.services._ServiceMeta",
    },
}


@dataclass(frozen=True, slots=True, order=True)
class Violation:
    """One broken rule: its kind, the module (dotted, under the package) and what it did."""

    kind: str
    module: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.module}: {self.detail}"


def layer_of(module: str) -> str | None:
    """The layer of a module named relative to the package (``_core.membership``, ``sync``)."""
    first = module.split(".")[0]
    if first in LAYERS:
        return first
    if module in BASE:
        return "base"
    if module in PUBLIC:
        return "public"
    return None


def _modules(package: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts.pop()
        yield ".".join(parts), path


def _type_names(annotation: ast.expr | None) -> set[str]:
    """Plain names in an annotation: ``Node``, ``"Node"``, ``Node | None``."""
    if annotation is None:
        return set()
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        try:
            annotation = ast.parse(annotation.value, mode="eval").body
        except SyntaxError:
            return set()
    if isinstance(annotation, ast.Name):
        return {annotation.id}
    if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
        return _type_names(annotation.left) | _type_names(annotation.right)
    return set()


class _Module:
    """What one module imports and uses."""

    def __init__(self, package: Path, name: str, path: Path, modules: set[str]) -> None:
        self.name = name
        self.tree = ast.parse(path.read_text(), str(path))
        self.package_name = package.name
        self.modules = modules
        own_package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
        self.own_package = [p for p in own_package if p != "__init__"]
        #: internal modules imported: dotted name -> line
        self.imports: dict[str, int] = {}
        #: external modules imported (top name)
        self.external: set[str] = set()
        #: local names bound to an internal module
        self.module_names: set[str] = set()
        #: local names bound to a name imported from another internal module
        self.imported_names: set[str] = set()
        #: local names bound to external modules: local -> module
        self.external_names: dict[str, str] = {}
        self.private_from: set[str] = set()
        self.from_external: set[tuple[str, str]] = set()
        self._read_imports()

    def _internal(self, dotted: str) -> str | None:
        """The internal module for an absolute dotted name, or None when external."""
        parts = dotted.split(".")
        if parts[0] != self.package_name:
            return None
        return ".".join(parts[1:]) or "__init__"

    def _read_imports(self) -> None:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = self._internal(alias.name)
                    if target is None:
                        self.external.add(alias.name.split(".")[0])
                        self.external_names[alias.asname or alias.name.split(".")[0]] = alias.name
                    else:
                        self.imports.setdefault(target, node.lineno)
                        if alias.asname:
                            self.module_names.add(alias.asname)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = self.own_package[: len(self.own_package) - (node.level - 1)]
                    parts = base + (node.module.split(".") if node.module else [])
                    target: str | None = ".".join(parts) or "__init__"
                else:
                    target = self._internal(node.module or "")
                if target is None:
                    top = (node.module or "").split(".")[0]
                    self.external.add(top)
                    for alias in node.names:
                        self.from_external.add((node.module or "", alias.name))
                    continue
                for alias in node.names:
                    local = alias.asname or alias.name
                    sub = alias.name if target == "__init__" else f"{target}.{alias.name}"
                    if sub in self.modules:
                        self.imports.setdefault(sub, node.lineno)
                        self.module_names.add(local)
                        continue
                    self.imports.setdefault(target, node.lineno)
                    self.imported_names.add(local)
                    if _is_private(alias.name) and target != self.name:
                        self.private_from.add(f"{target}.{alias.name}")


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__") and name not in ALLOWED_PRIVATE


class _PrivateUse(ast.NodeVisitor):
    """``obj._y`` where obj is an imported module or name, an annotated parameter or attribute."""

    def __init__(self, module: _Module) -> None:
        self.module = module
        self.found: set[str] = set()
        self.params: list[dict[str, str]] = [{}]
        self.attrs: list[dict[str, str]] = [{}]

    def _foreign(self, names: set[str]) -> str | None:
        hits = sorted(names & self.module.imported_names)
        return hits[0] if hits else None

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        attrs: dict[str, str] = {}
        for item in ast.walk(node):
            if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                params = {
                    a.arg: t
                    for a in (*item.args.args, *item.args.kwonlyargs, *item.args.posonlyargs)
                    if (t := self._foreign(_type_names(a.annotation)))
                }
                for sub in ast.walk(item):
                    target, value, annotation = None, None, None
                    if isinstance(sub, ast.Assign) and len(sub.targets) == 1:
                        target, value = sub.targets[0], sub.value
                    elif isinstance(sub, ast.AnnAssign):
                        target, value, annotation = sub.target, sub.value, sub.annotation
                    if not (
                        isinstance(target, ast.Attribute)
                        and isinstance(target.value, ast.Name)
                        and target.value.id == "self"
                    ):
                        continue
                    kind = self._foreign(_type_names(annotation))
                    if kind is None and isinstance(value, ast.Name):
                        kind = params.get(value.id)
                    if (
                        kind is None
                        and isinstance(value, ast.Call)
                        and isinstance(value.func, ast.Name)
                    ):
                        kind = self._foreign({value.func.id})
                    if kind is not None:
                        attrs[target.attr] = kind
        self.attrs.append(attrs)
        self.generic_visit(node)
        self.attrs.pop()

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        args = node.args
        params = {
            a.arg: t
            for a in (*args.args, *args.kwonlyargs, *args.posonlyargs)
            if (t := self._foreign(_type_names(a.annotation)))
        }
        self.params.append({**self.params[-1], **params})
        self.generic_visit(node)
        self.params.pop()

    visit_FunctionDef = _visit_function
    visit_AsyncFunctionDef = _visit_function

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if _is_private(node.attr):
            owner: str | None = None
            value = node.value
            if isinstance(value, ast.Name):
                if value.id in self.module.module_names or value.id in self.module.imported_names:
                    owner = value.id
                else:
                    owner = self.params[-1].get(value.id)
            elif (
                isinstance(value, ast.Attribute)
                and isinstance(value.value, ast.Name)
                and value.value.id == "self"
            ):
                owner = self.attrs[-1].get(value.attr)
            if owner is not None:
                self.found.add(f"{owner}.{node.attr}")
        self.generic_visit(node)


def _impurities(module: _Module) -> set[str]:
    found = {m for m in module.external if m in IMPURE_MODULES}
    for source, name in module.from_external:
        if source == "time" or (source == "random" and name != "Random"):
            found.add(f"{source}.{name}")
    clocks = {local for local, m in module.external_names.items() if m in ("time", "random")}
    for node in ast.walk(module.tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in clocks
        ):
            source = module.external_names[node.value.id]
            if source == "time" or node.attr != "Random":
                found.add(f"{source}.{node.attr}")
    return found


def check(package: Path) -> list[Violation]:
    """Every violation of the layer rules in the package at ``package`` (a directory)."""
    found: set[Violation] = set()
    listed = dict(_modules(package))
    names = set(listed)
    for name, path in listed.items():
        module = _Module(package, name, path, names)
        layer = layer_of(name)
        if layer is None:
            found.add(Violation("unplaced", name, "belongs to no layer"))
            continue
        for target in module.imports:
            target_layer = layer_of(target)
            if target_layer is not None and LAYERS.index(target_layer) > LAYERS.index(layer):
                found.add(Violation("upward", name, target))
        if layer in PURE:
            found |= {Violation("impure", name, what) for what in _impurities(module)}
        uses = _PrivateUse(module)
        uses.visit(module.tree)
        for what in module.private_from | uses.found:
            found.add(Violation("private", name, what))
    return sorted(found)


def _known(v: Violation) -> bool:
    if v.kind == "upward":
        return (v.module, v.detail) in KNOWN_UPWARD
    if v.kind == "impure":
        return (v.module, v.detail) in KNOWN_IMPURE
    if v.kind == "private":
        return v.detail in KNOWN_PRIVATE.get(v.module, set())
    return False


def test_mesh_keeps_its_layers() -> None:
    violations = check(ROOT / "mesh")
    private = [v for v in violations if v.kind == "private"]
    print(f"\n{len(private)} known uses of private names across modules (stage 2 shrinks them)")
    new = [str(v) for v in violations if not _known(v)]
    assert not new, "new layer violations:\n" + "\n".join(new)
    seen = {(v.kind, v.module, v.detail) for v in violations}
    stale = [f"upward: {m}: {t}" for (m, t) in KNOWN_UPWARD if ("upward", m, t) not in seen]
    stale += [f"impure: {m}: {w}" for (m, w) in KNOWN_IMPURE if ("impure", m, w) not in seen]
    stale += [
        f"private: {m}: {n}"
        for m, names in KNOWN_PRIVATE.items()
        for n in names
        if ("private", m, n) not in seen
    ]
    assert not stale, "fixed, strike them from the allowlists:\n" + "\n".join(stale)


def test_every_module_of_mesh_sits_in_a_layer() -> None:
    listed = dict(_modules(ROOT / "mesh"))
    assert all(layer_of(name) is not None for name in listed), sorted(listed)
    assert {layer_of(name) for name in listed} == set(LAYERS)


def _write(root: Path, files: dict[str, str]) -> Path:
    package = root / "pkg"
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


def test_the_checker_finds_each_kind_of_planted_violation(tmp_path: Path) -> None:
    package = _write(
        tmp_path,
        {
            "__init__.py": "from ._node.node import Node\n",
            "_errors.py": "class _Hidden(Exception): ...\n",
            "_config.py": "",
            "_util/__init__.py": "",
            "_core/__init__.py": "",
            "_core/table.py": (
                "import random\n"
                "import time\n"
                "from typing import TYPE_CHECKING\n"
                "from .._errors import _Hidden\n"
                "if TYPE_CHECKING:\n"
                "    from .._rpc.server import Server\n"
                "def pick(rng: random.Random) -> float:\n"
                "    return rng.random() + time.monotonic() + random.random()\n"
                "def ok() -> random.Random:\n"
                "    return random.Random(1)\n"
                "def spawn() -> None:\n"
                "    import asyncio\n"
                "    from os import getpid\n"
            ),
            "_wire/__init__.py": "",
            "_io/__init__.py": "",
            "_rpc/__init__.py": "",
            "_rpc/server.py": (
                "class Server:\n"
                "    def __init__(self) -> None:\n"
                "        self._state = 1\n"
                "    def same(self, other: 'Server') -> int:\n"
                "        return other._state\n"
            ),
            "_node/__init__.py": "",
            "_node/node.py": (
                "from .._rpc import server as srv\n"
                "from .._rpc.server import Server\n"
                "class Node:\n"
                "    def __init__(self, server: Server) -> None:\n"
                "        self._server = server\n"
                "        self._own = Server()\n"
                "    def peek(self) -> int:\n"
                "        return self._server._state + self._own._state\n"
                "def reach(server: Server) -> object:\n"
                "    return server._state, srv._private, Server._state\n"
                "def fine(n: Node) -> object:\n"
                "    return n._server, (1, 2)._replace\n"
            ),
            "_extra.py": "",
        },
    )
    found = {str(v) for v in check(package)}
    print("\n" + "\n".join(sorted(found)))
    assert found == {
        "upward: _core.table: _rpc.server",
        "impure: _core.table: time.monotonic",
        "impure: _core.table: random.random",
        "impure: _core.table: asyncio",
        "impure: _core.table: os",
        "private: _core.table: _errors._Hidden",
        "private: _node.node: Server._state",
        "private: _node.node: srv._private",
        "unplaced: _extra: belongs to no layer",
    }
