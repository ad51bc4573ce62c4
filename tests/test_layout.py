"""The tree keeps the shape the design asks for: small modules, short functions, thin scripts,
and the commands users type still resolve."""

from __future__ import annotations

import importlib.util

import pytest

from conftest import REPO, run_cli


def _code_shape():
    spec = importlib.util.spec_from_file_location("code_shape", REPO / "benchmarks" / "code_shape.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_no_module_over_300_lines_no_function_over_50_and_no_line_over_120():
    shape = _code_shape()
    files = shape.python_files(REPO)
    assert any(p.parts[-2:] == ("train", "loop.py") for p in files)  # the walk sees the packages
    long_modules = {str(p.relative_to(REPO)): n for p in files
                    if (n := len(p.read_text(encoding="utf-8").splitlines())) > 300}
    assert long_modules == {}
    long_functions = [(str(p.relative_to(REPO)), name, n) for p in files
                      for name, n in shape.function_lengths(p) if n > 50]
    assert long_functions == []
    long_lines = [f"{p.relative_to(REPO)}:{i}" for p in files
                  for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if len(line) > 120]
    assert long_lines == []


@pytest.mark.parametrize("script", ["train.py", "test.py"])
def test_scripts_only_parse_arguments(script):
    assert len((REPO / script).read_text(encoding="utf-8").splitlines()) <= 60


@pytest.mark.parametrize("module", ["pipeline.check", "pipeline.evaluate", "pipeline.export", "pipeline.plan",
                                    "pipeline.synthetic", "models3d"])
def test_commands_users_type_still_resolve(module):
    result = run_cli("-m", module, "--help")
    assert result.returncode == 0 and "usage:" in result.stdout


def test_metrics_api_keeps_its_import_path():
    from pipeline.metrics import asd, assd, dice, hd95, jaccard

    assert {f.__module__ for f in (asd, assd, dice, hd95, jaccard)} == {"pipeline.evaluate.metrics"}


LAYERS = ["base", "models3d", "data", "evaluate", "predict", "train", "plan"]
COMMANDS = {"pipeline.check", "pipeline.synthetic", "pipeline.metrics", "pipeline.export"}  # `python -m` aliases


def _layer(module: str) -> str | None:
    """The layer of a module of this project (DESIGN.md: base < models3d < data < ... < plan); None for
    other packages and for the command aliases users type, which stand above every layer."""
    parts = module.split(".")
    if parts[0] == "models3d":
        return "models3d"
    if parts[0] != "pipeline" or ".".join(parts[:2]) in COMMANDS:
        return None
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "base"


def _imports(path, module: str) -> list[str]:
    """The modules ``path`` (module ``module``) imports, relative imports resolved."""
    import ast

    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            found += [target] if node.module else [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names]
    return found


def test_imports_never_run_up_the_layers():
    upward = []
    for path in sorted([*(REPO / "pipeline").rglob("*.py"), *(REPO / "models3d").rglob("*.py")]):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        source = _layer(module)
        for target in _imports(path, module):
            layer = _layer(target)
            if source and layer and LAYERS.index(layer) > LAYERS.index(source):
                upward.append(f"{module} -> {target}")
    assert upward == []
    assert _layer("pipeline.predict.predictor") == "predict" and _layer("pipeline.files") == "base"
