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


def test_no_module_over_300_lines_and_no_function_over_50():
    shape = _code_shape()
    files = shape.python_files(REPO)
    assert any(p.parts[-2:] == ("train", "loop.py") for p in files)  # the walk sees the packages
    long_modules = {str(p.relative_to(REPO)): n for p in files
                    if (n := len(p.read_text(encoding="utf-8").splitlines())) > 300}
    assert long_modules == {}
    long_functions = [(str(p.relative_to(REPO)), name, n) for p in files
                      for name, n in shape.function_lengths(p) if n > 50]
    assert long_functions == []


@pytest.mark.parametrize("script", ["train.py", "test.py"])
def test_scripts_only_parse_arguments(script):
    assert len((REPO / script).read_text(encoding="utf-8").splitlines()) <= 60


@pytest.mark.parametrize("module", ["pipeline.check", "pipeline.evaluate", "pipeline.plan", "pipeline.synthetic",
                                    "models3d"])
def test_commands_users_type_still_resolve(module):
    result = run_cli("-m", module, "--help")
    assert result.returncode == 0 and "usage:" in result.stdout


def test_metrics_api_keeps_its_import_path():
    from pipeline.metrics import asd, assd, dice, hd95, jaccard

    assert {f.__module__ for f in (asd, assd, dice, hd95, jaccard)} == {"pipeline.evaluate.metrics"}
