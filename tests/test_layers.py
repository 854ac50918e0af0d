"""One direction of flow: a module never imports one to its right (STYLE.md habit 1)."""

import ast
from pathlib import Path

import lmlab

PACKAGE = Path(lmlab.__file__).parent
ORDER = ["errors", "config", "data", "tokenizers", "models", "training", "inspector", "series", "vision",
         "sample", "evaluate", "compare", "ladder", "export", "cli", "__main__"]


def _layer(module: str) -> int:
    head = module.split(".")[1] if module.startswith("lmlab.") else module
    return ORDER.index(head) if head in ORDER else -1


def test_imports_flow_one_way():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts)
        if module.endswith(".__init__"):
            module = module.removesuffix(".__init__")
        own = _layer(module) if module != "lmlab" else len(ORDER)
        for node in ast.walk(ast.parse(path.read_text())):
            imported = node.module if isinstance(node, ast.ImportFrom) else None
            if imported and imported.startswith("lmlab.") and _layer(imported) > own:
                offenders.append(f"{module} imports {imported}")
    assert not offenders, offenders
