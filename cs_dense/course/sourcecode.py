"""Reading and rewriting the package's Python source with the ``ast`` module.

Reading: :class:`Package` resolves a dotted name to the definition it means, through
re-exports (``cs_dense.ops.nms`` is the function in ``cs_dense/ops/nms.py``), and draws
the graph of which definition refers to which. The graph is conservative: using a class
counts as using all of its methods, and a method uses its whole class (``self.head(x)``
cannot be followed by name).

Rewriting: the tree finds the lines, the text is edited, so comments and layout survive
(``ast.unparse`` would drop every comment). :func:`stub_out` replaces function bodies,
:func:`shake` removes what nothing needs, :func:`narrow_cli` keeps some commands of an
``argparse`` command line.
"""

from __future__ import annotations

import ast
import functools
import itertools
import json
import textwrap
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

# --------------------------------------------------------------------------------------
# Reading: what each name refers to


#: Sources are parsed again and again (each transformation, each bundle a test builds).
parse = functools.lru_cache(maxsize=1024)(ast.parse)

#: A definition in the package: (module, qualified name), e.g. ("cs_dense.models.rpn", "RPNHead.forward").
Node = tuple[str, str]
#: What a dotted name, split at the dots, refers to in some namespace.
Resolver = Callable[[list[str]], Node | None]


# --------------------------------------------------------------------------------------
# The package's sources, and what each name in them refers to


def read_package(root: Path, package: str) -> dict[str, str]:
    """``{module name: source}`` of every module of the package ``root / package``."""
    sources = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        sources[name] = path.read_text(encoding="utf-8")
    return sources


def module_path(module: str, sources: dict[str, str]) -> Path:
    """Where ``module`` lives relative to the package's parent folder."""
    parts = Path(*module.split("."))
    is_package = any(other.startswith(module + ".") for other in sources)
    return parts / "__init__.py" if is_package else parts.with_suffix(".py")


def bound_imports(statement: ast.Import | ast.ImportFrom) -> dict[str, tuple[str, ...]]:
    """``{local name: (module, attribute...)}`` for one import statement (absolute imports only)."""
    if isinstance(statement, ast.Import):
        # `import a.b.c` binds `a`; `import a.b as c` binds `c` to `a.b`
        return {alias.asname or alias.name.split(".")[0]: (alias.name if alias.asname else alias.name.split(".")[0],)
                for alias in statement.names}
    if statement.level:
        raise ValueError(f"relative import of {statement.module!r}: the package uses absolute imports only")
    return {alias.asname or alias.name: (statement.module, alias.name) for alias in statement.names}


def imported_modules(tree: ast.AST, known: Iterable[str]) -> set[str]:
    """The modules of ``known`` an import anywhere in ``tree`` loads (parent packages included)."""
    known = set(known)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            parts = target.split(".")
            found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & known
    return found


def dotted_name(node: ast.AST) -> str | None:
    """``"a.b.c"`` for the expression ``a.b.c``, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(parts)])


class Package:
    """The package's modules parsed, with a resolver from dotted names to definitions."""

    def __init__(self, sources: dict[str, str]) -> None:
        self.sources = sources
        self.trees = {name: parse(source) for name, source in sources.items()}
        self.defs: dict[str, dict[str, ast.AST]] = {}
        self.imports: dict[str, dict[str, tuple[str, ...]]] = {}
        for name, tree in self.trees.items():
            defs, imports = {}, {}
            for statement in tree.body:
                if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    defs[statement.name] = statement
                elif isinstance(statement, ast.Assign | ast.AnnAssign):
                    targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
                    defs.update({t.id: statement for t in targets if isinstance(t, ast.Name)})
                elif isinstance(statement, ast.Import | ast.ImportFrom) and getattr(statement, "module", "") != "__future__":
                    imports.update(bound_imports(statement))
            self.defs[name], self.imports[name] = defs, imports

    def resolve(self, dotted: str) -> Node | None:
        """The definition ``dotted`` names (through re-exports), or None if it is not one of the package's.

        ``"cs_dense.models.RPNHead.forward"`` gives ``("cs_dense.models.rpn", "RPNHead.forward")``;
        a module, an instance attribute or a name outside the package gives None.
        """
        module, *attributes = dotted.split(".")
        return self.lookup(module, attributes)

    def lookup(self, module: str, attributes: list[str], *, submodules: bool = True) -> Node | None:
        """The definition reached from ``module`` by the attribute path, as Python looks it up.

        A module's own names (say ``cs_dense.ops.nms``, the function the package's
        ``__init__`` imports) come before its submodules; ``submodules=False`` is for a
        bare name in a module's code, which never means a submodule.
        """
        if module not in self.trees:
            return None
        while attributes:
            head, *rest = attributes
            if head in self.defs[module]:
                node = self.defs[module][head]
                if isinstance(node, ast.ClassDef) and rest and rest[0] in _methods(node):
                    return module, f"{head}.{rest[0]}"
                return module, head
            # (a package importing its own submodule, `from p import sub` in p, binds the submodule)
            if head in self.imports[module] and self.imports[module][head] != (module, head):
                target, *target_attributes = self.imports[module][head]
                return self.lookup(target, [*target_attributes, *rest])
            if not submodules or f"{module}.{head}" not in self.trees:
                return None
            module, attributes = f"{module}.{head}", rest
        return None

    def names_of(self, module: str) -> Resolver:
        """How a dotted name in ``module``'s code resolves."""
        return lambda parts: self.lookup(module, parts, submodules=False)

    def graph(self) -> dict[Node, set[Node]]:
        """Which definitions each definition refers to (see the module docstring for the rules)."""
        edges: dict[Node, set[Node]] = {}
        for module, defs in self.defs.items():
            for name, node in defs.items():
                edges.setdefault((module, name), set()).update(references(node, self.names_of(module)))
                if isinstance(node, ast.ClassDef):
                    for method in _methods(node):
                        edges[(module, name)].add((module, f"{name}.{method}"))
                        edges[(module, f"{name}.{method}")] = {(module, name)}
        return edges


def _methods(cls: ast.ClassDef) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    return {s.name: s for s in cls.body if isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef)}


def references(tree: ast.AST, resolve: Resolver) -> set[Node]:
    """Definitions of the package that names and attribute chains in ``tree`` refer to."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute | ast.Name) and isinstance(node.ctx, ast.Load):
            dotted = dotted_name(node)
            target = resolve(dotted.split(".")) if dotted else None
            if target is not None:
                found.add(target)
    return found


def reachable(graph: dict[Node, set[Node]], roots: Iterable[Node]) -> set[Node]:
    """Every node reachable from ``roots`` (the roots included)."""
    seen, todo = set(), list(roots)
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return seen


# --------------------------------------------------------------------------------------
# Editing source text


@dataclass(frozen=True)
class Edit:
    """Replace lines ``first`` to ``last`` (1-based, inclusive) with ``lines``."""

    first: int
    last: int
    lines: tuple[str, ...] = ()


def apply_edits(source: str, edits: Iterable[Edit]) -> str:
    lines = source.splitlines()
    bottom = len(lines) + 1
    for edit in sorted(edits, key=lambda e: e.first, reverse=True):
        assert edit.last < bottom, f"overlapping edits at line {edit.first}"
        lines[edit.first - 1 : edit.last] = edit.lines
        bottom = edit.first
    # removals merge the blank lines around them: at most two before a top-level line, one inside a block
    kept, blank = [], 0
    for line in lines:
        if not line.strip():
            blank += 1
            continue
        kept += [""] * min(blank, 1 if line[0].isspace() else 2) + [line]
        blank = 0
    return "\n".join(kept) + "\n"


def _first_line(node: ast.stmt, lines: list[str]) -> int:
    """The first line of a statement: its decorators, and the comments just above it (``#: ...``)."""
    first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
    while first > 1 and lines[first - 2].lstrip().startswith("#"):
        first -= 1
    return first


def docstring(node: ast.AST) -> ast.Expr | None:
    body = getattr(node, "body", [])
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
        return body[0]
    return None


def _find(tree: ast.Module, qualname: str) -> ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef:
    scope: list[ast.stmt] = tree.body
    for part in qualname.split("."):
        node = next(s for s in scope if isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and s.name == part)
        scope = node.body
    return node


def stub_out(source: str, stubs: Iterable[tuple[str, str]], decorators: Mapping[str, str] | None = None,
             header: str | None = None) -> str:
    """``source`` with functions' bodies replaced by ``raise NotImplementedError(message)``.

    Args:
        stubs: ``(qualified name, message)`` of each function or method to stub. It keeps
            its decorators, signature and docstring; a private one (``_name``) loses its
            docstring too, which documents how it works rather than what it does.
        decorators: ``{qualified name: decorator}`` put above a stub's own decorators
            (``"students_own('nms')"``, without the ``@``), or above a class's whose
            methods are stubbed.
        header: a line put after the module's leading imports when some stub is decorated
            (the decorator's import).

    Raises:
        ValueError: a name is a class, or a function whose body shares its ``def`` line;
            a decorator is for something neither stubbed nor holding a stub.
    """
    tree = parse(source)
    lines = source.splitlines()
    decorators = dict(decorators or {})
    edits = []
    if header is not None and decorators:
        leading = list(itertools.takewhile(lambda s: isinstance(s, ast.Import | ast.ImportFrom) or s is docstring(tree), tree.body))
        after = leading[-1].end_lineno if leading else 0
        edits.append(Edit(after + 1, after, (header,)))
    stubs = list(stubs)

    def decorate(qualname: str) -> None:
        node = _find(tree, qualname)
        first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        edits.append(Edit(first, first - 1, (f"{' ' * node.col_offset}@{decorators.pop(qualname)}",)))

    for owner in {q for q in decorators if any(s.startswith(q + ".") for s, _ in stubs)}:
        if isinstance(_find(tree, owner), ast.ClassDef):
            decorate(owner)
    for qualname, message in stubs:
        node = _find(tree, qualname)
        if isinstance(node, ast.ClassDef):
            raise ValueError(f"{qualname} is a class: stub its methods")
        if qualname in decorators:
            decorate(qualname)
        private = node.name.startswith("_") and not node.name.startswith("__")
        doc = None if private else docstring(node)
        statements = node.body[1:] if doc else node.body
        if not statements:
            raise ValueError(f"{qualname} has no body besides its docstring")
        if statements[0].lineno == node.lineno:
            raise ValueError(f"{qualname} has its body on its def line")
        # from just after the docstring (or the signature), so comments about the method go too
        first = doc.end_lineno + 1 if doc else _first_line(statements[0], lines)
        indent = " " * statements[0].col_offset
        parts = textwrap.wrap(message, 90, drop_whitespace=False)
        edits.append(Edit(first, node.end_lineno, (
            f"{indent}raise NotImplementedError(", *(f"{indent}    {json.dumps(part)}" for part in parts), f"{indent})",
        )))
    if decorators:
        raise ValueError(f"decorators for what is neither stubbed nor a class holding a stub: {', '.join(sorted(decorators))}")
    return apply_edits(source, edits)


def binds(statement: ast.stmt) -> set[str]:
    """Top-level names a statement binds (imports: see :func:`bound_imports`)."""
    if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {statement.name}
    if isinstance(statement, ast.Assign | ast.AnnAssign):
        targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
        return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    if isinstance(statement, ast.Import | ast.ImportFrom) and getattr(statement, "module", "") != "__future__":
        return set(bound_imports(statement))
    return set()


def _loads(tree: ast.AST) -> set[str]:
    """Names a piece of code reads, and the strings of an ``__all__`` it defines."""
    found = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    if isinstance(tree, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in tree.targets):
        found |= {e.value for e in ast.walk(tree.value) if isinstance(e, ast.Constant) and isinstance(e.value, str)}
    return found


def _import_line(statement: ast.Import | ast.ImportFrom, keep: set[str], indent: str = "") -> tuple[str, ...]:
    """An import statement that binds only the names in ``keep``, wrapped like the repository's."""
    aliases = [a for a in statement.names if (a.asname or a.name.split(".")[0]) in keep]
    if isinstance(statement, ast.Import):
        return (indent + ast.unparse(ast.Import(names=aliases)),)
    one_line = indent + ast.unparse(ast.ImportFrom(module=statement.module, names=aliases, level=0))
    if len(one_line) <= 120:
        return (one_line,)
    names = [ast.unparse(ast.ImportFrom(module="m", names=[a], level=0)).split(" import ")[1] for a in aliases]
    return (f"{indent}from {statement.module} import (", *(f"{indent}    {n}," for n in names), f"{indent})")


def shake(source: str, roots: Iterable[str]) -> str:
    """``source`` without the top-level definitions and imports nothing needs.

    Needed are the ``roots``, whatever a needed statement reads, and whatever statements
    binding no name read (the docstring, ``if __name__ == "__main__"``). A private method
    (``_name``) whose name the module never mentions as an attribute goes too.
    """
    tree = parse(source)
    lines = source.splitlines()
    needed, reads = set(roots), {}
    for statement in tree.body:
        reads[statement] = _loads(statement)
        if not binds(statement):
            needed |= reads[statement]
    grown = True
    while grown:
        before = len(needed)
        for statement in tree.body:
            if binds(statement) & needed:
                needed |= reads[statement]
        grown = len(needed) > before
    attributes = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    edits = []
    for statement in tree.body:
        bound = binds(statement)
        if not bound:
            continue
        if not bound & needed:
            edits.append(Edit(_first_line(statement, lines), statement.end_lineno))
        elif isinstance(statement, ast.Import | ast.ImportFrom) and bound - needed:
            edits.append(Edit(statement.lineno, statement.end_lineno, _import_line(statement, needed)))
        elif isinstance(statement, ast.ClassDef):
            edits += [
                Edit(_first_line(method, lines), method.end_lineno)
                for method in _methods(statement).values()
                if method.name.startswith("_") and not method.name.startswith("__") and method.name not in attributes
            ]
    return apply_edits(source, edits)


def _command_of(node: ast.AST) -> str | None:
    """``"check"`` for ``args.command == "check"`` and for ``commands.add_parser("check", ...)``."""
    if isinstance(node, ast.Compare) and dotted_name(node.left) == "args.command" and isinstance(node.ops[0], ast.Eq):
        value = node.comparators[0]
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_parser":
        value = node.args[0] if node.args else None
    else:
        return None
    return value.value if isinstance(value, ast.Constant) and isinstance(value.value, str) else None


def _statements(node: ast.AST) -> Iterator[ast.stmt]:
    """Every statement inside ``node``, at any depth."""
    return (child for child in ast.walk(node) if isinstance(child, ast.stmt) and child is not node)


def _only_commands(source: str, commands: tuple[str, ...]) -> str:
    """The command line's parser entries and ``main`` branches of ``commands`` only."""
    tree = parse(source)
    lines = source.splitlines()
    edits = []
    for function in (s for s in tree.body if isinstance(s, ast.FunctionDef)):
        # parser entries: `p = commands.add_parser("name")` and the `p.add_argument(...)` lines after it
        group, parser = None, None
        for statement in function.body:
            call = statement.value if isinstance(statement, ast.Assign | ast.Expr) else None
            if _command_of(call):
                group = _command_of(call)
                parser = statement.targets[0].id if isinstance(statement, ast.Assign) else None
            elif not (isinstance(call, ast.Call) and parser and dotted_name(call.func) == f"{parser}.add_argument"):
                group = parser = None
            if group is not None and group not in commands:
                edits.append(Edit(statement.lineno, statement.end_lineno))
        # branches of main: rebuild each `if args.command == ...` chain from its kept branches
        for statement in _statements(function):
            if not (isinstance(statement, ast.If) and _command_of(statement.test)):
                continue
            chain, node = [], statement
            while isinstance(node, ast.If) and _command_of(node.test):
                chain.append(node)
                node = node.orelse[0] if len(node.orelse) == 1 else None
            if node is not None or chain[-1].orelse:
                raise ValueError(f"cli.py line {statement.lineno}: a command chain with an else branch")
            if all(_command_of(branch.test) in commands for branch in chain):
                continue
            indent = " " * statement.col_offset
            kept = []
            for branch in (b for b in chain if _command_of(b.test) in commands):
                keyword = "elif" if kept else "if"
                kept += [f"{indent}{keyword} {ast.unparse(branch.test)}:", *lines[branch.body[0].lineno - 1 : branch.body[-1].end_lineno]]
            edits.append(Edit(statement.lineno, statement.end_lineno, tuple(kept)))
    return apply_edits(source, _outermost(edits))


def _outermost(edits: list[Edit]) -> list[Edit]:
    """The edits not contained in another one (a removed branch inside a removed chain)."""
    return [e for e in edits if not any(o is not e and o.first <= e.first and e.last <= o.last for o in edits)]


def _unread(source: str, unavailable: set[str]) -> str:
    """The command line without what its remaining commands no longer read.

    Local assignments in a function that nothing reads; options whose ``args.<dest>`` is
    never read; exception classes in an ``except`` tuple imported from an ``unavailable``
    module.
    """
    tree = parse(source)
    edits = []
    read_attributes = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and dotted_name(n.value) == "args"}
    missing = {name for s in tree.body if isinstance(s, ast.ImportFrom) and s.module in unavailable for name in binds(s)}
    for function in (s for s in tree.body if isinstance(s, ast.FunctionDef)):
        reads = _loads(function)
        for statement in _statements(function):
            if isinstance(statement, ast.Assign) and all(isinstance(t, ast.Name) and t.id not in reads for t in statement.targets):
                edits.append(Edit(statement.lineno, statement.end_lineno))
            call = statement.value if isinstance(statement, ast.Expr) else None
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "add_argument":
                dest = next((k.value.value for k in call.keywords if k.arg == "dest"), None)
                dest = dest or call.args[0].value.lstrip("-").replace("-", "_")
                if dest not in read_attributes:
                    edits.append(Edit(statement.lineno, statement.end_lineno))
        for handler in (n for n in ast.walk(function) if isinstance(n, ast.ExceptHandler)):
            if isinstance(handler.type, ast.Tuple) and {dotted_name(e) for e in handler.type.elts} & missing:
                kept = [e for e in handler.type.elts if dotted_name(e) not in missing]
                header = f"except ({', '.join(map(ast.unparse, kept))}) as {handler.name}:" if handler.name else None
                if header is None or not kept:
                    raise ValueError(f"cli.py line {handler.lineno}: cannot narrow this except clause")
                line = source.splitlines()[handler.lineno - 1]
                edits.append(Edit(handler.lineno, handler.type.end_lineno, (line[: handler.col_offset] + header,)))
    return apply_edits(source, edits)


def narrow_cli(source: str, commands: tuple[str, ...], unavailable: set[str]) -> str:
    """An ``argparse`` command line (a ``_parser`` with ``commands.add_parser("name")`` entries, a
    ``main`` dispatching on ``args.command == "name"``) with only ``commands``, and without
    imports from ``unavailable`` modules.

    Raises:
        ValueError: what is left still imports from an unavailable module.
    """
    while (narrower := _unread(_only_commands(source, commands), unavailable)) != source:
        source = narrower
    source = shake(source, {"main"})
    tree = parse(source)
    for statement in tree.body:
        if isinstance(statement, ast.ImportFrom) and statement.module in unavailable:
            raise ValueError(f"the commands {', '.join(commands)} use {statement.module}, which is not available")
    doc = docstring(tree)
    summary = f'"""The ``cs-dense`` command of the student bundle: {", ".join(commands)}."""'
    return apply_edits(source, [Edit(doc.lineno, doc.end_lineno, (summary,))])
