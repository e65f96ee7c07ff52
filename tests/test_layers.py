"""Imports go down the layers of docs/architecture.md, never up (and so never in a circle).

Every module of the package is parsed (not imported) and each `drgdip.*` import it makes,
at module level or inside a function, is checked against the layer table below."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# module prefix -> layer; the longest matching prefix decides (docs/architecture.md)
LAYERS = {
    "drgdip.arrowio": 0,
    "drgdip.codesets": 0,
    "drgdip.grouper": 1,
    "drgdip.weights": 2,
    "drgdip.weights.report": 3,
    "drgdip.weights.monitoring": 3,
    "drgdip.synth": 4,
    "drgdip.bench": 4,
    "drgdip.spark": 4,           # grouping a Spark DataFrame (docs/spark.md); bench/spark_throughput uses it
    "drgdip.cli": 5,
    "drgdip.__main__": 5,
    "drgdip": 5,                 # the package's own __init__: the public API, above everything
}


def layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def modules():
    for path in sorted(REPO.rglob("*.py")):
        rel = path.relative_to(REPO)
        if rel.parts[0] in ("tests", "docs", "examples") or rel.parts[0].startswith("."):
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(["drgdip", *parts]), path


def is_module(name: str) -> bool:
    parts = name.split(".")[1:]
    return bool(parts) and ((REPO.joinpath(*parts).with_suffix(".py")).exists()
                            or (REPO.joinpath(*parts) / "__init__.py").exists())


def imports(path: Path, module: str):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield node.lineno, target
            for a in node.names:               # `from drgdip.weights import report`: a module
                if is_module(f"{target}.{a.name}"):
                    yield node.lineno, f"{target}.{a.name}"


def test_every_module_has_a_layer_and_no_import_goes_up():
    found = list(modules())
    assert any(m == "drgdip.grouper.drg.kernel" for m, _ in found), "package modules not found"
    upward = []
    for module, path in found:
        own = layer(module)
        for line, target in imports(path, module):
            if target == "drgdip" or not target.startswith("drgdip."):
                continue
            if layer(target) > own:
                upward.append(f"{path.relative_to(REPO)}:{line}: {module} (layer {own}) imports "
                              f"{target} (layer {layer(target)})")
    assert not upward, "imports that go up a layer:\n" + "\n".join(sorted(set(upward)))


@pytest.mark.parametrize("module,expected", [("drgdip.weights.report.settlement_report", 3), ("drgdip.weights.settlement.points", 2),
                                             ("drgdip.grouper.drg.kernel", 1), ("drgdip.cli", 5)])
def test_layer_table(module, expected):
    assert layer(module) == expected
