"""Static checks of deployment/: the Prefect project file and the Kubernetes Dask manifest."""

from __future__ import annotations

import ast
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PREFECT_YAML = ROOT / "deployment" / "prefect.yaml"
K8S_YAML = ROOT / "deployment" / "kubernetes" / "daskcluster.yaml"
FLOW_FILE = ROOT / "flows" / "cohort_ef.py"
ENTRYPOINT = "flows/cohort_ef.py:cohort_ef"

CRON_FIELD = r"(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*"


def _valid_cron(expr: str) -> bool:
    try:
        from cronsim import CronSim, CronSimError  # installed with prefect 3
    except ImportError:  # pragma: no cover - fallback when prefect changes its cron library
        fields = expr.split()
        return len(fields) == 5 and all(re.fullmatch(CRON_FIELD, f) for f in fields)
    try:
        CronSim(expr, datetime.now(UTC))
    except CronSimError:
        return False
    return True


@pytest.fixture(scope="module")
def project() -> dict:
    return yaml.safe_load(PREFECT_YAML.read_text())


@pytest.fixture(scope="module")
def deployment(project: dict) -> dict:
    (dep,) = [d for d in project["deployments"] if d["name"] == "cohort-ef-nightly"]
    return dep


def test_prefect_yaml_has_one_nightly_deployment(project: dict, deployment: dict) -> None:
    assert [d["name"] for d in project["deployments"]] == ["cohort-ef-nightly"]
    assert deployment["entrypoint"] == ENTRYPOINT


def test_process_work_pool(deployment: dict) -> None:
    pool = deployment["work_pool"]["name"]
    assert pool and "process" in pool


def test_cron_schedule_is_valid_and_utc(deployment: dict) -> None:
    assert "schedule" not in deployment  # the legacy key conflicts with `schedules`
    (schedule,) = deployment["schedules"]
    assert _valid_cron(schedule["cron"]), schedule["cron"]
    assert schedule.get("timezone") == "UTC"
    assert not _valid_cron("61 2 * * *")


def test_parameters_build_the_run_options_and_resume(deployment: dict) -> None:
    """The deployment's one parameter is a mapping the flow turns into its RunOptions."""
    from echo_batch.run.options import RunOptions

    params = deployment["parameters"]
    assert set(params) == {"options"}
    options = RunOptions(**params["options"])
    assert options.resume is True
    assert options.chunk.segmentation == "model"
    assert str(options.data) and str(options.out)


def test_pull_step_sets_working_directory(project: dict) -> None:
    steps = project["pull"]
    assert any("prefect.deployments.steps.set_working_directory" in s for s in steps)


@pytest.mark.skipif(not FLOW_FILE.exists(), reason="flows/cohort_ef.py not written yet")
def test_parameters_exist_in_flow_signature(deployment: dict) -> None:
    tree = ast.parse(FLOW_FILE.read_text())
    (fn,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "cohort_ef"]
    names = {a.arg for a in fn.args.args + fn.args.kwonlyargs}
    assert set(deployment["parameters"]) <= names


def test_prefect_accepts_the_project_file(project: dict) -> None:
    models = pytest.importorskip("prefect.cli.deploy._models")
    parsed = models.PrefectYamlModel.model_validate(project)
    assert parsed.deployments[0].entrypoint == ENTRYPOINT


def _worker_args(doc: dict) -> list[str]:
    (container,) = doc["spec"]["worker"]["spec"]["containers"]
    return [str(a) for a in container["args"]]


def test_kubernetes_manifest_gpu_group_requests_gpu_resources() -> None:
    docs = [d for d in yaml.safe_load_all(K8S_YAML.read_text()) if d]
    kinds = {d["kind"]: d for d in docs}
    assert {"DaskCluster", "DaskWorkerGroup"} <= set(kinds)
    cluster = kinds["DaskCluster"]
    assert cluster["apiVersion"] == "kubernetes.dask.org/v1"
    assert "scheduler" in cluster["spec"]
    assert "GPU=1" not in _worker_args(cluster)  # CPU workers never advertise a GPU

    gpu = kinds["DaskWorkerGroup"]
    assert gpu["spec"]["cluster"] == cluster["metadata"]["name"]
    args = _worker_args(gpu)
    assert args[args.index("--resources") + 1] == "GPU=1"
    (container,) = gpu["spec"]["worker"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"] == "echo-batch:latest"


def _container(doc: dict) -> dict:
    (container,) = doc["spec"]["worker"]["spec"]["containers"]
    return container


def _option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def test_kubernetes_manifest_has_the_cuda_host_layout() -> None:
    """As the local cluster on a CUDA host (issue 16): single-threaded preloaded workers; CPU
    workers with CUDA_VISIBLE_DEVICES="" and no GPU; GPU workers with GPU=1 and the pod's GPU."""
    docs = [d for d in yaml.safe_load_all(K8S_YAML.read_text()) if d]
    kinds = {d["kind"]: d for d in docs}
    cpu, gpu = _container(kinds["DaskCluster"]), _container(kinds["DaskWorkerGroup"])
    for container in (cpu, gpu):
        args = [str(a) for a in container["args"]]
        assert args[:2] == ["dask", "worker"]
        assert _option(args, "--nthreads") == "1"
        assert _option(args, "--preload") == "echo_batch.run.worker_preload"
        assert "--nworkers" not in args  # one worker process per pod
    cpu_env = {e["name"]: e["value"] for e in cpu["env"]}
    gpu_env = {e["name"]: e["value"] for e in gpu.get("env", [])}
    assert cpu_env["CUDA_VISIBLE_DEVICES"] == ""
    assert "CUDA_VISIBLE_DEVICES" not in gpu_env  # the device plugin's GPU stays visible
    assert "--resources" not in cpu["args"]
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"]
    assert _option([str(a) for a in gpu["args"]], "--resources") == "GPU=1"
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
