"""Shape of the code base: modules, lines, the longest function, modules over a limit.

    python benchmarks/code_shape.py [--root .] [--max-lines 300] [--max-function 50]

Counts every ``.py`` file outside outputs/, data/ and hidden folders; a function's
length runs from its ``def`` line to its last line (decorators and docstring included).
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path


def python_files(root: Path) -> list[Path]:
    """Every .py file under ``root`` except in outputs/, data/ and hidden folders (.venv)."""
    skip = {"outputs", "data"}
    found = []
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).parts
        if parts[0] not in skip and not any(part.startswith(".") for part in parts[:-1]):
            found.append(path)
    return sorted(found)


def function_lengths(path: Path) -> list[tuple[str, int]]:
    """(qualified name, lines) of every function and method in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((prefix + child.name, child.end_lineno - child.lineno + 1))
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")

    visit(tree, "")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--max-lines", type=int, default=300)
    parser.add_argument("--max-function", type=int, default=50)
    args = parser.parse_args()
    files = python_files(args.root)
    lines = {p: len(p.read_text(encoding="utf-8").splitlines()) for p in files}
    functions = [(p, name, n) for p in files for name, n in function_lengths(p)]
    longest = max(functions, key=lambda f: f[2])
    library = [p for p in files if p.relative_to(args.root).parts[0] in ("pipeline", "models3d")]
    print(f"| modules (pipeline + models3d) | {len(library)} |")
    print(f"| lines (pipeline + models3d) | {sum(lines[p] for p in library)} |")
    print(f"| lines (all .py outside benchmarks/) | {sum(lines.values())} |")
    print(f"| longest function | {longest[0].relative_to(args.root)}:{longest[1]} ({longest[2]} lines) |")
    big = [f"{p.relative_to(args.root)} ({lines[p]})" for p in files if lines[p] > args.max_lines]
    print(f"| modules over {args.max_lines} lines | {', '.join(big) or 'none'} |")
    long = [f"{p.relative_to(args.root)}:{name} ({n})" for p, name, n in functions if n > args.max_function]
    print(f"| functions over {args.max_function} lines | {len(long)}: {', '.join(long) or 'none'} |")


if __name__ == "__main__":
    main()
