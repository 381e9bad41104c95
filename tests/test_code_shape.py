"""The code stays readable in one pass: no function in the packages grows past 80 lines."""

from __future__ import annotations

import ast

from conftest import ROOT

MAX_FUNCTION_LINES = 80


def long_functions(source: str, max_lines: int) -> list[tuple[str, int]]:
    tree = ast.parse(source)
    return [
        (node.name, node.end_lineno - node.lineno + 1)
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > max_lines
    ]


def test_the_check_finds_a_long_function():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    assert long_functions(f"def long():\n{body}\n", MAX_FUNCTION_LINES) == [("long", MAX_FUNCTION_LINES + 1)]
    assert long_functions("def short():\n    return 1\n", MAX_FUNCTION_LINES) == []


def test_no_function_over_80_lines():
    found = {
        f"{path.relative_to(ROOT)}:{name}": lines
        for package in ("converter", "vtn_edge")
        for path in sorted((ROOT / package).rglob("*.py"))
        for name, lines in long_functions(path.read_text(), MAX_FUNCTION_LINES)
    }
    assert not found, f"functions over {MAX_FUNCTION_LINES} lines (split them into named steps): {found}"
