"""Bad-input corpus, end to end through the real CLI and flow (issue 7, part 1).

One ``echo-batch run DATA --out OUT --segmentation gt`` on a cohort that mixes good patients with
one patient per bad input (see ``tests/corpus.py``) must exit 0, leave the good patients exactly as
a clean run does, record every bad one as failed or partial with an error naming the file and the
reason, and log one line per problem without tracebacks. The last test keeps
``docs/reliability.md`` in step with the tests.
"""

from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest
from cli_runs import REPO, cli_env, permissions_enforceable, run_cli
from corpus import (
    CASES,
    ROOT_CASES,
    Case,
    Corpus,
    RootCase,
    build_corpus,
    lock_unreadable,
    unlock_unreadable,
)

from echo_batch.domain import SegmentationSource
from echo_batch.run.options import ChunkOptions, RunOptions
from echo_batch.run.serial import run_cohort

pytestmark = pytest.mark.slow

DOCS = REPO / "docs" / "reliability.md"


def _skip_unless_enforced(case: Case | RootCase) -> None:
    if case.needs_unprivileged and not permissions_enforceable():
        pytest.skip("running as root and capabilities cannot be dropped: mode 000 is readable")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    corpus = build_corpus(tmp_path_factory.mktemp("corpus"))
    if permissions_enforceable():
        lock_unreadable(corpus)
    yield corpus
    unlock_unreadable(corpus)  # so that pytest can delete the tree


@pytest.fixture(scope="module")
def clean(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, ...]:
    """The good patients alone, run serially in this process (flow == serial: test_flow.py)."""
    out = tmp_path_factory.mktemp("clean-out")
    run_cohort(RunOptions(corpus.clean, out, ChunkOptions(segmentation=SegmentationSource.GT)))
    return _read(out / "patients.parquet"), _read(out / "images.parquet")


@pytest.fixture(scope="module")
def bad_run(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory):
    """``echo-batch run`` (Prefect flow, 2 local Dask workers) on the mixed cohort."""
    out = tmp_path_factory.mktemp("bad-out") / "out"
    args = ["run", corpus.bad, "--out", out, "--segmentation", "gt", "--chunk-size", "4"]
    result = run_cli(args, env=cli_env(), unprivileged=True, timeout=300)
    return result, out


@pytest.fixture(scope="module")
def patients(bad_run) -> pd.DataFrame:
    result, out = bad_run
    assert result.returncode == 0, result.stderr[-5000:]
    return _read(out / "patients.parquet")


def _read(path: Path) -> pd.DataFrame:
    """Nullable dtypes: an integer column keeps its type when bad rows hold nulls."""
    return pd.read_parquet(path, dtype_backend="numpy_nullable")


def _rows(frame: pd.DataFrame, ids) -> pd.DataFrame:
    return frame[frame.patient_id.isin(ids)].reset_index(drop=True)


def test_run_exits_0_with_every_discovered_patient_exactly_once(bad_run, patients, corpus):
    result, out = bad_run
    assert result.returncode == 0, result.stderr[-5000:]
    ids = list(patients.patient_id)
    assert len(ids) == len(set(ids))
    expected = set(corpus.good_ids) | {c.patient_id for c in corpus.cases}
    if not permissions_enforceable():  # the locked folder was listed and measured
        expected.add("patient0023")
    assert ids == sorted(expected)  # discovery order
    assert set(patients.status) <= {"ok", "partial", "failed"}
    images = pd.read_parquet(out / "images.parquet")
    assert images.groupby(["patient_id", "view", "instant"]).size().max() == 1


def test_embedded_prefect_api_sends_no_telemetry(bad_run):
    """Offline, the embedded API's analytics logged an ERROR line on every run."""
    result, _ = bad_run
    assert "telemetry" not in result.stderr.lower()


def test_good_patients_are_identical_to_a_clean_run(bad_run, patients, clean, corpus):
    clean_patients, clean_images = clean
    _, out = bad_run
    good = list(corpus.good_ids)
    assert sorted(clean_patients.patient_id) == sorted(good)
    assert (clean_patients.status == "ok").all()
    pd.testing.assert_frame_equal(_rows(patients, good), _rows(clean_patients, good))
    images = _read(out / "images.parquet")
    pd.testing.assert_frame_equal(_rows(images, good), _rows(clean_images, good))


@pytest.mark.parametrize("case", CASES, ids=[c.case for c in CASES])
def test_bad_patient_is_failed_or_partial_naming_file_and_reason(patients, case: Case):
    _skip_unless_enforced(case)
    (row,) = patients[patients.patient_id == case.patient_id].itertuples()
    assert row.status == case.status, row.error
    if case.status == "ok":  # missing cfg: measured, without the cfg reference
        assert pd.isna(row.error) and pd.notna(row.ef_pct)
        assert pd.isna(row.ef_ref_pct) and pd.isna(row.image_quality)
        return
    if case.file is not None:
        assert case.file in row.error, row.error
    assert case.reason in row.error, row.error


@pytest.mark.parametrize("case", ROOT_CASES, ids=[c.case for c in ROOT_CASES])
def test_odd_entry_is_a_logged_discovery_problem_not_a_row(bad_run, patients, case: RootCase):
    _skip_unless_enforced(case)
    result, out = bad_run
    problems = json.loads((out / "run.json").read_text())["discovery_problems"]
    mine = [p for p in problems if os.path.basename(p["path"]) == case.entry]
    assert len(mine) == 1 and case.reason in mine[0]["reason"], problems
    shown = case.entry.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    lines = [line for line in result.stderr.splitlines() if case.reason in line]
    assert len(lines) == 1 and f"/{shown}:" in lines[0], lines
    if case.case == "duplicate-patient-id":
        assert (patients.patient_id == case.entry).sum() == 1
    else:
        assert case.entry not in set(patients.patient_id)


def test_log_has_one_line_per_problem_patient_and_no_traceback(bad_run, patients, corpus):
    result, _ = bad_run
    at = result.stderr.find("Traceback")
    assert at < 0, result.stderr[max(0, at - 3000) : at + 6000]
    lines = result.stderr.splitlines()
    status_line = re.compile(r"^(?P<pid>\S+): (?P<status>partial|failed): ")
    flagged = [m["pid"] for line in lines if (m := status_line.match(line))]
    expected = sorted(patients.patient_id[patients.status != "ok"])
    # one line per problem patient, none for good ones
    assert sorted(flagged) == expected, result.stderr[-6000:]
    for case in corpus.cases:
        if case.status == "ok" or (case.needs_unprivileged and not permissions_enforceable()):
            continue
        (line,) = [line for line in lines if line.startswith(f"{case.patient_id}: ")]
        assert case.reason in line and (case.file is None or case.file in line), line


# --------------------------------------------------------------------------- docs table


def _defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}


def test_docs_table_matches_the_tests():
    """Every case and every reliability test is in docs/reliability.md; every test named exists."""
    text = DOCS.read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    named = {m for line in rows for m in re.findall(r"^\| `([^`]+)`", line)}
    for case in (*CASES, *ROOT_CASES):
        assert case.case in named, f"{case.case} is not in {DOCS.name}"
    refs = re.findall(r"`(tests/test_\w+\.py)::(test_\w+)(?:\[([^\]]+)\])?`", text)
    assert refs, "the table names no test"
    case_ids = {c.case for c in (*CASES, *ROOT_CASES)}
    for file, name, param in refs:
        path = REPO / file
        assert path.is_file(), file
        assert name in _defined_tests(path), f"{file}::{name} does not exist"
        if param and name in (
            "test_bad_patient_is_failed_or_partial_naming_file_and_reason",
            "test_odd_entry_is_a_logged_discovery_problem_not_a_row",
        ):
            assert param in case_ids, f"{file}::{name}[{param}] is not a corpus case"
        elif param:
            assert param in path.read_text(encoding="utf-8"), f"{file}::{name}[{param}]"
    for row in rows:  # each row names at least one test
        assert "tests/test_" in row, row
    referenced = {(file, name) for file, name, _ in refs}
    for file in ("tests/test_reliability.py", "tests/test_faults.py", "tests/test_security.py"):
        for name in sorted(_defined_tests(REPO / file)):
            if name.startswith("test_") and name != "test_docs_table_matches_the_tests":
                assert (file, name) in referenced, f"{file}::{name} is not in {DOCS.name}"
