"""The import rule of docs/architecture.md: nothing in the package imports `handmesh.commands` except the `handmesh`
command itself (cli.py) and the command modules; command modules parse arguments and call library functions."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "handmesh"


def imported_modules(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file under package folder `root`, nested ones (inside
    functions) included."""
    package = ".".join(path.relative_to(root.parent).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the file's package
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            found += [(node.lineno, f"{base}.{alias.name}" if base else alias.name) for alias in node.names]
            found.append((node.lineno, base))
    return found


def arrows_into_commands(root: Path = PACKAGE) -> list[str]:
    arrows = []
    for path in sorted(root.rglob("*.py")):
        if path == root / "cli.py" or (root / "commands") in path.parents:
            continue
        for line, module in imported_modules(path, root):
            if module == "handmesh.commands" or module.startswith("handmesh.commands."):
                arrows.append(f"{path.relative_to(root.parent)}:{line} imports {module}")
    return arrows


def test_nothing_in_the_package_imports_commands():
    assert arrows_into_commands() == []


def test_the_check_sees_nested_and_relative_imports(tmp_path):
    """The walker itself: an import inside a function and a relative one are both arrows into commands/."""
    package = tmp_path / "handmesh"
    (package / "commands").mkdir(parents=True)
    (package / "library.py").write_text("def f():\n    from handmesh.commands.evaluate import run\n")
    (package / "sub").mkdir()
    (package / "sub" / "deep.py").write_text("from ..commands import predict\nimport handmesh.commands.lightning\n")
    (package / "commands" / "evaluate.py").write_text("from handmesh.commands import predict\n")  # allowed
    assert arrows_into_commands(package) == [
        "handmesh/library.py:2 imports handmesh.commands.evaluate.run",
        "handmesh/library.py:2 imports handmesh.commands.evaluate",
        "handmesh/sub/deep.py:1 imports handmesh.commands.predict",
        "handmesh/sub/deep.py:1 imports handmesh.commands",
        "handmesh/sub/deep.py:2 imports handmesh.commands.lightning",
    ]
