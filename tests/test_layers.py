"""No import runs from a lower layer of the package to a higher one (function-level imports included)."""

import ast
from pathlib import Path

import isl_cli

PACKAGE = Path(isl_cli.__file__).parent

#: Layers from the bottom up; a module may import its own layer and the ones below.
LAYERS = [
    ("foundation", ["isl_cli", "errors", "bounds", "paths", "digest", "threads", "distributed", "device", "precision", "config"]),
    ("core", ["bank", "neighbors", "losses", "triplets", "mining", "knn", "similarity_pairs", "linear_probe",
              "checks", "models", "data.augment", "data.transforms"]),
    ("files", ["artifacts", "checkpoints", "locks", "backbone_file", "data"]),
    ("engine", ["engine"]),
    ("cli", ["cli", "__main__"]),
]


def layer_of(module: str) -> int:
    """Index in LAYERS of a dotted module name (the longest matching prefix decides)."""
    relative = module.removeprefix("isl_cli").removeprefix(".") or "isl_cli"
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (relative == prefix or relative.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    assert best is not None, f"{module} belongs to no layer: add it to LAYERS"
    return best


def imports_of(path: Path) -> set[str]:
    """Every isl_cli module a file imports, wherever the import statement is."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("isl_cli"):
            if node.module == "isl_cli":  # a submodule, or a name of the package itself (__version__)
                found.update(f"isl_cli.{alias.name}" if _is_submodule(alias.name) else "isl_cli"
                             for alias in node.names)
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("isl_cli"))
    return found


def _is_submodule(name: str) -> bool:
    return (PACKAGE / f"{name}.py").exists() or (PACKAGE / name).is_dir()


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_runs_up_the_layers():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        for target in imports_of(path):
            if layer_of(target) > layer_of(module):
                upward.append(f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} "
                              f"({LAYERS[layer_of(target)][0]})")
    assert not upward, "\n".join(upward)


def test_the_check_sees_an_upward_import():
    assert layer_of("isl_cli.engine.features") > layer_of("isl_cli.device")
    assert layer_of("isl_cli.cli.common") > layer_of("isl_cli.engine.progress")
    assert layer_of("isl_cli.data.augment") < layer_of("isl_cli.data.store")  # the longest prefix decides
    assert layer_of("isl_cli.models.spec") < layer_of("isl_cli.artifacts")  # models do no file I/O
