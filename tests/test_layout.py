"""The package's layout, read from its source (README.md, "How the code is laid out"): no import
cycle between its modules, function-local imports included, and no library module importing a
command (`python -m reproduce.<command>`)."""
import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "reproduce"


def module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_command(name):
    """A command: a module at the package root that runs `run_cli(main)` when run as a script."""
    path = MODULES[name]
    if name.count(".") != 1 or path.name == "__init__.py":
        return False
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) and "run_cli" in ast.unparse(node)
               for node in tree.body)


COMMANDS = sorted(n for n in MODULES if is_command(n))


def imports(name):
    """The package's modules that module `name` imports, anywhere in it (function-local imports
    and imports under `if` included): `from X import y` counts as importing X.y where that is a
    module, else X. The implicit import of a module's parent packages is not counted."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in MODULES)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            if not base.startswith("reproduce"):
                continue
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    found.discard(name)
    return found


GRAPH = {name: imports(name) for name in MODULES}


def test_the_graph_is_read():
    assert "reproduce.train" in COMMANDS and "reproduce.coco" in COMMANDS and "reproduce.cli" not in COMMANDS
    assert len(COMMANDS) == 14, COMMANDS
    assert all(target in MODULES for targets in GRAPH.values() for target in targets)
    assert sum(map(len, GRAPH.values())) > 100


def find_cycle(graph):
    """One import cycle as [a, b, ..., a], or None (depth-first search)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "closed"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_no_import_cycle():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_package_root_holds_the_commands_and_three_modules_more():
    root = sorted(n for n, path in MODULES.items() if path.parent == PACKAGE and path.name != "__init__.py")
    others = [n for n in root if n not in COMMANDS]
    assert others == ["reproduce.cli", "reproduce.errors"], others
    folders = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert folders == ["baselines", "caffe", "data", "datasets", "evaluation", "methods", "model", "pipeline",
                       "reporting", "training", "utils"], folders


def test_no_library_module_imports_a_command():
    offenders = {name: sorted(GRAPH[name] & set(COMMANDS)) for name in MODULES if name not in COMMANDS}
    assert not any(offenders.values()), {k: v for k, v in offenders.items() if v}
