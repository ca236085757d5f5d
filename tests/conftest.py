"""Shared fixtures: locations of the real CAMUS data (bundled sample and ../shared), and a Prefect
API for the tests that run the flow."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared"
CAMUS224 = SHARED / "camus224"
BUNDLED_SAMPLE = REPO / "examples" / "camus224-test"


def _sample_param() -> object:
    """The bundled sample when present, else the 50 testing patients of ../shared/camus224."""
    if (BUNDLED_SAMPLE / "database_nifti").is_dir():
        return pytest.param((BUNDLED_SAMPLE, None), id="bundled")
    split_file = CAMUS224 / "database_split" / "subgroup_testing.txt"
    only = split_file.read_text().split() if split_file.is_file() else None
    return pytest.param((CAMUS224, only), id="shared-testing", marks=pytest.mark.shared)


@pytest.fixture(scope="session")
def camus224() -> Path:
    """Root of ../shared/camus224 (skips when absent)."""
    if not (CAMUS224 / "database_nifti").is_dir():
        pytest.skip(f"real CAMUS-224 data not found at {CAMUS224}")
    return CAMUS224


@pytest.fixture(scope="session", params=[_sample_param()])
def real_sample(request: pytest.FixtureRequest) -> tuple[Path, list[str]]:
    """``(root, patient ids)`` of the real sample used by reader tests (skips when absent)."""
    root, only = request.param
    nifti = root / "database_nifti"
    if not nifti.is_dir():
        pytest.skip(f"no real CAMUS sample: neither {BUNDLED_SAMPLE} nor {CAMUS224} exists")
    ids = sorted(p.name for p in nifti.iterdir() if p.is_dir())
    if only is not None:
        ids = [pid for pid in ids if pid in set(only)]
    return root, ids


@pytest.fixture(scope="module")
def api_url():
    """One temporary Prefect API for a test module that runs the flow (in process or as CLI
    children): one server start per module, not per run. Yields its URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()
