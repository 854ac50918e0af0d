"""One direction of flow: a module never imports one to its right (the project's style; the order is in README.md's
Layout section). Every import form counts: `import lmlab.x`, `from lmlab.x import y`, `from lmlab import x`,
relative imports, and imports inside functions."""

import ast
from pathlib import Path

import lmlab

PACKAGE = Path(lmlab.__file__).parent
# A package's place is its own unless one of its modules is named with a place of its own (the longest name
# wins): the run folder and config sit below the trainer that writes into the folder, the pipeline above all.
ORDER = ["errors", "names", "files", "config", "data", "tokenizers", "data.shard_writer", "models", "run.config",
         "run.data",
         "training.schedule", "training.checkpoint.checks", "training.checkpoint.parts", "training.checkpoint.format",
         "run.folder", "training", "run.fit_defaults", "inspector", "series", "vision", "sample", "evaluate",
         "notebook", "experiments.stats", "experiments.groups", "compare", "export", "run", "experiments", "ladder",
         "cli", "__main__"]


def _layer(module: str) -> int:
    parts = module.removeprefix("lmlab.").split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in ORDER:
            return ORDER.index(".".join(parts[:n]))
    return -1


def imported_modules(tree: ast.AST, module: str, is_package: bool) -> list[str]:
    """Every lmlab module `tree` imports, wherever the import statement sits."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: `from . import x`, `from ..models import y`
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            if base == "lmlab":  # `from lmlab import run`: the submodules named
                found += [f"lmlab.{alias.name}" for alias in node.names]
            else:
                found.append(base)
    return [name for name in found if name.startswith("lmlab.")]


def test_imports_flow_one_way():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts)
        is_package = module.endswith(".__init__")
        module = module.removesuffix(".__init__")
        own = _layer(module) if module != "lmlab" else len(ORDER)
        for imported in imported_modules(ast.parse(path.read_text()), module, is_package):
            if _layer(imported) > own:
                offenders.append(f"{module} imports {imported}")
    assert not offenders, offenders


def test_every_import_form_is_seen():
    source = ("import lmlab.cli\nfrom lmlab import run\nfrom ..ladder import x\n"
              "def f():\n    from lmlab.export import y\n")
    seen = imported_modules(ast.parse(source), "lmlab.models.gpt", is_package=False)
    assert seen == ["lmlab.cli", "lmlab.run", "lmlab.ladder", "lmlab.export"]


def test_every_subpackage_has_a_place_in_the_order():
    heads = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    assert heads <= set(ORDER), sorted(heads - set(ORDER))
