"""operators/ and kernels/ must not depend on the streaming engine."""
import ast
import subprocess
import sys

from conftest import REPO


def test_no_bytewax_import_statement_in_operators_or_kernels():
    offenders = []
    for package in ("operators", "kernels"):
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                offenders += [f"{path.relative_to(REPO)}: {n}" for n in names if n.split(".")[0] in ("bytewax", "pipeline")]
    assert offenders == []


def test_importing_every_operator_and_kernel_module_loads_no_bytewax():
    modules = [
        f"{p.parent.name}.{p.stem}" if p.stem != "__init__" else p.parent.name
        for package in ("operators", "kernels")
        for p in sorted((REPO / package).glob("*.py"))
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "leaked = sorted(m for m in sys.modules if m.split('.')[0] in ('bytewax', 'pipeline'))\n"
        "print(len(sys.modules)); assert not leaked, leaked\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert len(modules) >= 8
