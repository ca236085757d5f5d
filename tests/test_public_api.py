"""The public imports the README promises exist (a re-layout keeps them or updates the README)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _api_block() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Python API") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README has no python block under 'Python API'"
    return match.group(1)


def test_readme_python_api_block_imports():
    block = _api_block()
    imports = [line for line in block.splitlines() if line.startswith(("from ", "import "))]
    assert len(imports) >= 10
    proc = subprocess.run(
        [sys.executable, "-c", block],
        capture_output=True,
        text=True,
        cwd=README.parent,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_readme_python_api_example_runs_on_a_synthetic_cohort(tmp_path):
    from echo_batch.run.options import ChunkOptions, RunOptions
    from echo_batch.run.serial import run_cohort
    from echo_batch.synth import synth_cohort

    data = synth_cohort(tmp_path / "syn", 2, seed=1, fmt="nifti", max_side=96)
    record = run_cohort(RunOptions(data, tmp_path / "out", ChunkOptions(segmentation="gt")))
    assert record["summary"]["status"] == {"ok": 2}
