"""Layers depend one way: core <- plain models | data formats <- sampling/interop <- stages <- CLI.

Every `import jukebox_pl.X` in the package (module level or inside functions) is checked against the layer map,
so a package importing one above it fails here, named by file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import jukebox_pl

PACKAGE = Path(jukebox_pl.__file__).parent
# lazy.py: used by __init__ files only
CORE = {"errors", "machine", "user_files", "config", "audio", "text", "lyrics", "training", "hub"}
MODELS = {"vqvae", "prior"}
ALLOWED = {
    "errors": set(),
    "machine": set(),  # what this machine has (memory), for bounding inputs up front
    "user_files": {"errors"},  # the checks of a file a user names (regular, bounded, the right kind)
    "lazy": set(),
    "config": {"errors", "machine", "user_files", "config"},
    "audio": {"errors", "machine", "user_files"},
    "text": {"errors"},
    "lyrics": {"errors", "text", "user_files"},
    "training": {"errors", "machine", "config", "training"},
    "hub": {"errors", "user_files", "config", "training", "hub"},  # the Hub layout the plain models save and load
    "vqvae": CORE | {"vqvae"},
    "prior": CORE | MODELS,
    "data": CORE | {"data"},  # knows nothing of models
    "interop": CORE | MODELS | {"data", "interop"},  # the reference's id tables become a LabelVocab
    "sampling": CORE | MODELS | {"data", "sampling"},
    "features": CORE | MODELS | {"data", "sampling", "features"},  # the top prior's activations for other projects
    "unified_lightning": CORE | MODELS | {"data"},
    "lightning_cli": CORE | MODELS | {"data"},  # LightningCLI over the classes of either binding
    "stages": CORE | MODELS | {"data", "sampling", "features", "interop", "stages"},
}
ORDER = ["errors", "machine", "user_files", "lazy", "config", "audio", "text", "lyrics", "training", "hub", "vqvae",
         "prior", "data", "interop", "sampling", "features", "unified_lightning", "lightning_cli", "stages",
         "cli"]  # fmt: skip


def layer_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def imported(tree: ast.AST) -> list[tuple[int, str, bool]]:
    """(line, imported jukebox_pl top-level name, at module level?) for every import in a module."""
    top = {id(n) for n in getattr(tree, "body", [])}
    out = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jukebox_pl"):
            parts = node.module.split(".")
            names = [parts[1]] if len(parts) > 1 else [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1] for a in node.names if a.name.startswith("jukebox_pl.")]
        out += [(node.lineno, n, id(node) in top) for n in names]
    return out


def test_no_package_imports_a_package_above_it():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        layer = layer_of(path)
        if layer in ("__init__", "__main__", "cli") or path.name == "__init__.py":  # lazy exports, no imports
            continue
        assert layer in ALLOWED, f"{path}: new top-level package {layer!r} needs a place in the layer map"
        for line, name, _ in imported(ast.parse(path.read_text())):
            if name != layer and name not in ALLOWED[layer]:
                bad.append(f"{path.relative_to(PACKAGE)}:{line} ({layer}) imports jukebox_pl.{name}")
    assert not bad, "\n".join(bad)


def test_the_layer_map_is_one_way():
    for layer, allowed in ALLOWED.items():
        for dep in allowed - {layer}:
            assert ORDER.index(dep) < ORDER.index(layer), f"{layer} may import {dep}, which is not below it"


def test_the_cli_imports_heavy_modules_only_inside_commands():
    tree = ast.parse((PACKAGE / "cli.py").read_text())
    module_level = {name for _, name, top in imported(tree) if top}
    assert module_level <= {"errors"}, module_level
