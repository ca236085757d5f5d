"""Dependency rules of the package layout (docs/architecture.md), enforced by walking the imports.

Every module of ``echo_batch/`` and ``flows/`` is parsed with :mod:`ast`, never imported, so that
imports inside functions and under ``if TYPE_CHECKING:`` are seen too; relative imports are
resolved against the importing module's package, and ``importlib.import_module("x")`` with a
literal name counts as an import of ``x``. A rule names the modules it applies to and the imports
they must not make; a few exceptions are written out beside the rule that grants them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCE_PACKAGES = ("echo_batch", "flows")

# Where an import statement runs.
AT_IMPORT = "module"  # module level (also in a class body or a module-level if/try)
IN_FUNCTION = "function"  # inside a def or lambda: runs when called
TYPE_ONLY = "type"  # under ``if TYPE_CHECKING:``: never runs, still a dependency of the code


@dataclass(frozen=True)
class Import:
    """One imported name.

    Attributes:
        module: dotted name of the importing module, e.g. ``echo_batch.run.chunk``.
        path: the importing file, relative to the scanned root.
        line: line of the import statement.
        target: dotted name imported. ``from a.b import c`` yields ``a.b`` and ``a.b.c`` (``c`` may
            be a sub-module), so that ``from echo_batch import io`` counts as importing
            ``echo_batch.io``.
        where: :data:`AT_IMPORT`, :data:`IN_FUNCTION` or :data:`TYPE_ONLY`.
    """

    module: str
    path: str
    line: int
    target: str
    where: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line} imports {self.target} ({self.where})"


def module_name(root: Path, path: Path) -> tuple[str, bool]:
    """Dotted module name of a source file and whether it is a package ``__init__``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    """Absolute name of ``from {'.' * level}{name} import ...`` written in ``module``.

    Raises:
        ValueError: the relative import climbs above the top-level package.
    """
    if level == 0:
        return name or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    if level - 1 > len(package) - 1:
        raise ValueError(f"relative import beyond the top-level package in {module}")
    base = package[: len(package) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _literal_import_call(node: ast.Call) -> str | None:
    """``x`` for ``importlib.import_module("x")``, ``import_module("x")`` or ``__import__("x")``."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name not in {"import_module", "__import__"} or not node.args:
        return None
    first = node.args[0]
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
        return first.value
    return None


class _ImportVisitor(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, path: str) -> None:
        self.module, self.is_package, self.path = module, is_package, path
        self.where = AT_IMPORT
        self.found: list[Import] = []

    def _add(self, node: ast.AST, target: str) -> None:
        self.found.append(Import(self.module, self.path, node.lineno, target, self.where))

    def _nested(self, where: str, nodes: list[ast.stmt] | list[ast.AST]) -> None:
        saved = self.where
        # a function inside a TYPE_CHECKING block stays type-only
        self.where = saved if saved == TYPE_ONLY else where
        for child in nodes:
            self.visit(child)
        self.where = saved

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        # decorators and defaults run at definition time; the body when called
        for expr in [*node.decorator_list, *node.args.defaults, *node.args.kw_defaults]:
            if expr is not None:
                self.visit(expr)
        self._nested(IN_FUNCTION, node.body)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self.visit_FunctionDef(node)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._nested(IN_FUNCTION, [node.body])

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            self._nested(TYPE_ONLY, node.body)
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = resolve(self.module, self.is_package, node.level, node.module)
        if base:
            self._add(node, base)
        for alias in node.names:
            if alias.name != "*":
                self._add(node, f"{base}.{alias.name}" if base else alias.name)

    def visit_Call(self, node: ast.Call) -> None:
        target = _literal_import_call(node)
        if target is not None:
            self._add(node, target)
        self.generic_visit(node)


def imports_of(root: Path, path: Path) -> list[Import]:
    """Every import of one source file (see :class:`Import`)."""
    module, is_package = module_name(root, path)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    visitor = _ImportVisitor(module, is_package, path.relative_to(root).as_posix())
    visitor.visit(tree)
    return visitor.found


def scan(root: Path, packages: tuple[str, ...] = SOURCE_PACKAGES) -> list[Import]:
    """Every import of every ``.py`` file under ``root/<package>`` for the given packages."""
    found: list[Import] = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            found.extend(imports_of(root, path))
    return found


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@dataclass(frozen=True)
class Rule:
    """``importers`` never import anything in ``forbidden``.

    Attributes:
        name: short id (test ids, known-violation keys).
        text: the rule in words, as docs/architecture.md states it.
        importers: module prefixes the rule applies to.
        forbidden: import prefixes they must not use.
        exempt: module prefixes excluded from ``importers``.
        allowed_in_function: ``(module, import prefix)`` pairs allowed inside a function only.
        import_time_only: only imports that run when the module is imported count.
    """

    name: str
    text: str
    importers: tuple[str, ...]
    forbidden: tuple[str, ...]
    exempt: tuple[str, ...] = ()
    allowed_in_function: tuple[tuple[str, str], ...] = ()
    import_time_only: bool = False

    def violations(self, imports: list[Import]) -> list[Import]:
        """The imports that break this rule."""
        broken = []
        for imp in imports:
            if not _within(imp.module, self.importers) or _within(imp.module, self.exempt):
                continue
            if not _within(imp.target, self.forbidden):
                continue
            if self.import_time_only and imp.where != AT_IMPORT:
                continue
            if imp.where == IN_FUNCTION and any(
                imp.module == module and _within(imp.target, (prefix,))
                for module, prefix in self.allowed_in_function
            ):
                continue
            broken.append(imp)
        return broken


DASK = ("dask", "distributed", "dask_jobqueue", "dask_kubernetes")
PREFECT = ("prefect", "prefect_dask")

RULES = (
    Rule(
        "measure-is-pure",
        "echo_batch.measure never reads files, knows no torch and no later stage: no torch, "
        "SimpleITK, pyarrow, pandas, Prefect or Dask, none of echo_batch.io, qc, store, run, "
        "model, report; measure/camus_method.py alone may import torch inside a function "
        "(its bilinear upsampler).",
        importers=("echo_batch.measure",),
        forbidden=(
            "torch",
            "SimpleITK",
            "pyarrow",
            "pandas",
            *PREFECT,
            *DASK,
            "echo_batch.io",
            "echo_batch.qc",
            "echo_batch.store",
            "echo_batch.run",
            "echo_batch.model",
            "echo_batch.report",
        ),
        allowed_in_function=(("echo_batch.measure.camus_method", "torch"),),
    ),
    Rule(
        "run-knows-no-prefect",
        "echo_batch.run (options, the chunk function, the serial run, the cluster) never imports "
        "Prefect: flows/ wires it into a flow.",
        importers=("echo_batch.run",),
        forbidden=PREFECT,
    ),
    Rule(
        "readers-know-no-model",
        "echo_batch.io knows nothing of the model, the measurements or the outputs: no torch, "
        "Prefect or Dask, none of echo_batch.model, measure, qc, run, store, report, synth.",
        importers=("echo_batch.io",),
        forbidden=(
            "torch",
            *PREFECT,
            *DASK,
            "echo_batch.model",
            "echo_batch.measure",
            "echo_batch.qc",
            "echo_batch.run",
            "echo_batch.store",
            "echo_batch.report",
            "echo_batch.synth",
        ),
    ),
    Rule(
        "qc-is-pure",
        "echo_batch.qc never imports torch, Prefect or Dask, nor echo_batch.run, model, report.",
        importers=("echo_batch.qc",),
        forbidden=(
            "torch",
            *PREFECT,
            *DASK,
            "echo_batch.run",
            "echo_batch.model",
            "echo_batch.report",
        ),
    ),
    Rule(
        "store-knows-no-execution",
        "echo_batch.store never imports torch, Prefect or Dask, nor echo_batch.run, model, "
        "report: whatever executes the chunks writes through it.",
        importers=("echo_batch.store",),
        forbidden=(
            "torch",
            *PREFECT,
            *DASK,
            "echo_batch.run",
            "echo_batch.model",
            "echo_batch.report",
        ),
    ),
    Rule(
        "model-engine-knows-no-stage",
        "The segmentation engine (echo_batch.model.unet, bundle, preprocess, inference) reads no "
        "input format and writes no output: none of echo_batch.io, measure, qc, store, run, "
        "report, synth, nor Prefect or Dask.",
        importers=(
            "echo_batch.model.unet",
            "echo_batch.model.bundle",
            "echo_batch.model.preprocess",
            "echo_batch.model.inference",
        ),
        forbidden=(
            "echo_batch.io",
            "echo_batch.measure",
            "echo_batch.qc",
            "echo_batch.store",
            "echo_batch.run",
            "echo_batch.report",
            "echo_batch.synth",
            *PREFECT,
            *DASK,
        ),
    ),
    Rule(
        "base-imports-no-stage",
        "The shared base (echo_batch.domain, errors, clinical, version, atomic) imports no stage "
        "package and no heavy library.",
        importers=(
            "echo_batch.domain",
            "echo_batch.errors",
            "echo_batch.clinical",
            "echo_batch.version",
            "echo_batch.atomic",
        ),
        forbidden=(
            "echo_batch.io",
            "echo_batch.measure",
            "echo_batch.qc",
            "echo_batch.store",
            "echo_batch.run",
            "echo_batch.model",
            "echo_batch.report",
            "echo_batch.synth",
            "echo_batch.cli",
            "torch",
            "pandas",
            "pyarrow",
            "SimpleITK",
            *PREFECT,
            *DASK,
        ),
    ),
    Rule(
        "package-never-imports-flows",
        "Nothing under echo_batch imports flows, except the command line, the entry point that "
        "starts the flow, and only inside a command (`echo-batch --help` loads no Prefect).",
        importers=("echo_batch",),
        forbidden=("flows",),
        allowed_in_function=(("echo_batch.cli", "flows"),),
    ),
    Rule(
        "prefect-only-in-flows-and-cli",
        "Only flows/ and echo_batch/cli.py import Prefect.",
        importers=("echo_batch",),
        forbidden=PREFECT,
        exempt=("echo_batch.cli",),
    ),
    Rule(
        "torch-at-import-only-in-model",
        "No module outside echo_batch.model imports torch when it is imported (inside a function "
        "is fine): importing the package, the CLI or a reader never pays torch's import.",
        importers=SOURCE_PACKAGES,
        forbidden=("torch",),
        exempt=("echo_batch.model",),
        import_time_only=True,
    ),
)

# Breaches of a rule by the current code, each with the reason it is not fixed here. A rule with
# known breaches is marked xfail(strict=True): the day the breach is fixed the test passes, which
# strict xfail turns into a failure, and the entry must go. Any breach not listed fails at once.
KNOWN_BREACHES: dict[str, tuple[tuple[str, str], ...]] = {}


def new_breaches(rule: Rule, imports: list[Import]) -> list[Import]:
    """Breaches of ``rule`` not listed in :data:`KNOWN_BREACHES`.

    A listed ``(module, prefix)`` covers every import statement of ``module`` that imports
    something under ``prefix``, with all the names that statement yields
    (``from echo_batch.store import atomic`` also yields ``echo_batch.store``).
    """
    broken = rule.violations(imports)
    known = {
        (imp.module, imp.line)
        for imp in broken
        for module, prefix in KNOWN_BREACHES.get(rule.name, ())
        if imp.module == module and _within(imp.target, (prefix,))
    }
    return [imp for imp in broken if (imp.module, imp.line) not in known]


@pytest.fixture(scope="module")
def repo_imports() -> list[Import]:
    return scan(REPO)


def test_the_scan_sees_the_whole_package(repo_imports):
    modules = {imp.module for imp in repo_imports}
    for expected in ("echo_batch.cli", "echo_batch.measure.landmarks", "echo_batch.run.chunk"):
        assert expected in modules
    # imports inside functions are found: the CLI loads its heavy parts in its commands
    assert any(imp.module == "echo_batch.cli" and imp.where == IN_FUNCTION for imp in repo_imports)


@pytest.mark.parametrize("rule", RULES, ids=[rule.name for rule in RULES])
def test_no_new_breach(rule: Rule, repo_imports):
    new = new_breaches(rule, repo_imports)
    assert not new, f"{rule.text}\n" + "\n".join(map(str, new))


@pytest.mark.parametrize(
    "rule",
    [
        pytest.param(
            rule,
            marks=pytest.mark.xfail(
                strict=True,
                reason=f"known breach, see KNOWN_BREACHES[{rule.name!r}]",
            ),
        )
        if rule.name in KNOWN_BREACHES
        else rule
        for rule in RULES
    ],
    ids=[rule.name for rule in RULES],
)
def test_rule_holds(rule: Rule, repo_imports):
    broken = rule.violations(repo_imports)
    assert not broken, f"{rule.text}\n" + "\n".join(map(str, broken))


def test_no_module_outside_model_loads_torch_when_imported():
    """Dynamic twin of the static torch rule: import every module of echo_batch (outside
    echo_batch.model) and flows in one fresh interpreter; torch must still be unloaded.
    This also catches torch arriving through another module's import-time imports."""
    names = sorted(
        {
            module_name(REPO, path)[0]
            for package in SOURCE_PACKAGES
            for path in (REPO / package).rglob("*.py")
        }
    )
    names = [n for n in names if not _within(n, ("echo_batch.model", "echo_batch.__main__"))]
    code = textwrap.dedent(
        f"""
        import importlib, sys
        for name in {names!r}:
            importlib.import_module(name)
            if "torch" in sys.modules:
                sys.exit(f"importing {{name}} imported torch")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --------------------------------------------------------------------------- the checker itself


def _write_tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


SYNTHETIC_TREE = {
    "echo_batch/__init__.py": "",
    "echo_batch/domain.py": "from echo_batch import io\n",  # base -> stage
    "echo_batch/measure/__init__.py": "",
    "echo_batch/measure/landmarks.py": "from ..io import image\n",  # relative, two levels up
    "echo_batch/measure/volumes.py": "def f():\n    import torch\n",  # only camus_method may
    "echo_batch/measure/camus_method.py": """
        import torch.nn.functional as F  # at import time: not allowed


        def upsample(x):
            import torch  # allowed: inside a function

            return torch.as_tensor(x)
        """,
    "echo_batch/io/__init__.py": "",
    "echo_batch/io/image.py": """
        from typing import TYPE_CHECKING

        import SimpleITK

        if TYPE_CHECKING:
            from echo_batch.model.bundle import Bundle  # a type-only import is still a dependency
        """,
    "echo_batch/qc/__init__.py": "from . import metrics\n",  # own package: fine
    "echo_batch/qc/metrics.py": """
        import importlib


        def load():
            return importlib.import_module("torch")
        """,
    "echo_batch/store/__init__.py": "",
    "echo_batch/store/output.py": "from echo_batch.run.chunk import ChunkResult\n",
    "echo_batch/run/__init__.py": "",
    "echo_batch/run/chunk.py": "def go():\n    from prefect import flow\n",
    "echo_batch/report/__init__.py": "",
    "echo_batch/report/build.py": "import torch\n\nimport flows.cohort_ef\n",
    "echo_batch/cli.py": """
        from prefect import flow  # the CLI may import Prefect
        import flows  # but flows only inside a command


        def run():
            from flows.cohort_ef import cohort_ef
        """,
    "echo_batch/model/__init__.py": "",
    "echo_batch/model/unet.py": "import torch\n",  # the one place torch loads at import
    "echo_batch/model/inference.py": "from echo_batch.store import records\n",
    "echo_batch/model/evaluate.py": "from echo_batch.run import serial\n",  # a tool: not the engine
    "flows/__init__.py": "",
    "flows/cohort_ef.py": "import prefect\nfrom echo_batch.run import chunk\n",
}


def test_checker_reports_each_breach_of_a_synthetic_tree(tmp_path):
    _write_tree(tmp_path, SYNTHETIC_TREE)
    imports = scan(tmp_path)
    found = {
        (rule.name, imp.module, imp.target, imp.line)
        for rule in RULES
        for imp in rule.violations(imports)
    }
    assert found == {
        ("base-imports-no-stage", "echo_batch.domain", "echo_batch.io", 1),
        ("measure-is-pure", "echo_batch.measure.landmarks", "echo_batch.io", 1),
        ("measure-is-pure", "echo_batch.measure.landmarks", "echo_batch.io.image", 1),
        ("measure-is-pure", "echo_batch.measure.volumes", "torch", 2),
        ("measure-is-pure", "echo_batch.measure.camus_method", "torch.nn.functional", 2),
        (
            "torch-at-import-only-in-model",
            "echo_batch.measure.camus_method",
            "torch.nn.functional",
            2,
        ),
        ("readers-know-no-model", "echo_batch.io.image", "echo_batch.model.bundle", 7),
        ("readers-know-no-model", "echo_batch.io.image", "echo_batch.model.bundle.Bundle", 7),
        ("qc-is-pure", "echo_batch.qc.metrics", "torch", 6),
        ("store-knows-no-execution", "echo_batch.store.output", "echo_batch.run.chunk", 1),
        (
            "store-knows-no-execution",
            "echo_batch.store.output",
            "echo_batch.run.chunk.ChunkResult",
            1,
        ),
        ("run-knows-no-prefect", "echo_batch.run.chunk", "prefect", 2),
        ("run-knows-no-prefect", "echo_batch.run.chunk", "prefect.flow", 2),
        ("prefect-only-in-flows-and-cli", "echo_batch.run.chunk", "prefect", 2),
        ("prefect-only-in-flows-and-cli", "echo_batch.run.chunk", "prefect.flow", 2),
        ("torch-at-import-only-in-model", "echo_batch.report.build", "torch", 1),
        ("package-never-imports-flows", "echo_batch.report.build", "flows.cohort_ef", 3),
        ("package-never-imports-flows", "echo_batch.cli", "flows", 3),
        ("model-engine-knows-no-stage", "echo_batch.model.inference", "echo_batch.store", 1),
        (
            "model-engine-knows-no-stage",
            "echo_batch.model.inference",
            "echo_batch.store.records",
            1,
        ),
    }


def test_known_breaches_excuse_only_their_own_statement(tmp_path):
    _write_tree(tmp_path, SYNTHETIC_TREE)
    imports = scan(tmp_path)
    rule = next(rule for rule in RULES if rule.name == "store-knows-no-execution")
    # KNOWN_BREACHES lists store.parts -> run.chunk; the tree's store.output -> run.chunk is new
    assert {(imp.module, imp.line) for imp in new_breaches(rule, imports)} == {
        ("echo_batch.store.output", 1)
    }


def test_relative_imports_resolve_against_the_package():
    assert resolve("echo_batch.qc", True, 1, None) == "echo_batch.qc"  # from . in __init__
    assert resolve("echo_batch.qc.flags", False, 1, None) == "echo_batch.qc"  # from . in a module
    assert resolve("echo_batch.qc.flags", False, 1, "metrics") == "echo_batch.qc.metrics"
    assert resolve("echo_batch.qc.flags", False, 2, "measure") == "echo_batch.measure"
    assert resolve("echo_batch.qc", True, 2, "io") == "echo_batch.io"
    assert resolve("echo_batch.qc.flags", False, 0, "numpy") == "numpy"
    with pytest.raises(ValueError):
        resolve("echo_batch.qc.flags", False, 3, "x")
