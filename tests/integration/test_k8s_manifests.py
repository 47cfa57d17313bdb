"""docker/k8s/ validated offline: built-in kinds against Kubernetes' schemas (kubernetes-validate), DaskCluster and
DaskWorkerGroup against the CRDs the dask-kubernetes operator ships, unknown fields refused in both."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Any

import pytest

from .conftest import REPO

K8S = REPO / "docker" / "k8s"
KUBERNETES_VERSION = "1.30.0"  # the oldest release the manifests promise to fit
CRD_FOLDER = "operator/deployment/helm/dask-kubernetes-operator/crds"
CRD_FILES = {"DaskCluster": "daskcluster.yaml", "DaskWorkerGroup": "daskworkergroup.yaml"}

yaml = pytest.importorskip("yaml")


def _documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found.append((path.name, doc))
    return found


DOCUMENTS = _documents()


def _crd(kind: str) -> dict[str, Any]:
    spec = importlib.util.find_spec("dask_kubernetes")  # the files only: importing it needs a Kubernetes client
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("dask-kubernetes is not installed (its CRDs are the schema): pip install --no-deps dask-kubernetes")
    path = Path(next(iter(spec.submodule_search_locations))) / CRD_FOLDER / CRD_FILES[kind]
    return yaml.safe_load(path.read_text())


def _strict(schema: Any) -> Any:
    """An OpenAPI v3 schema as JSON Schema that, like ``kubectl --validate=strict``, refuses unknown fields."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) for key, value in schema.items() if not key.startswith("x-kubernetes-")}
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in out and "additionalProperties" not in out and \
            not schema.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def test_every_manifest_is_there() -> None:
    kinds = sorted(doc["kind"] for _, doc in DOCUMENTS)
    assert kinds == ["DaskCluster", "DaskWorkerGroup", "Job", "PersistentVolumeClaim", "Pod"]


@pytest.mark.parametrize(("name", "doc"), [d for d in DOCUMENTS if d[1]["kind"] not in CRD_FILES],
                         ids=lambda value: value if isinstance(value, str) else "")
def test_built_in_kinds_validate_against_the_kubernetes_schema(name: str, doc: dict[str, Any]) -> None:
    validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate").validate
    validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(("name", "doc"), [d for d in DOCUMENTS if d[1]["kind"] in CRD_FILES],
                         ids=lambda value: value if isinstance(value, str) else "")
def test_dask_resources_validate_against_the_operator_crds(name: str, doc: dict[str, Any]) -> None:
    import jsonschema

    crd = _crd(doc["kind"])
    group, (version,) = crd["spec"]["group"], [v for v in crd["spec"]["versions"] if v.get("served")]
    assert doc["apiVersion"] == f"{group}/{version['name']}"
    schema = _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]["properties"]["spec"]))
    jsonschema.validate(doc["spec"], schema)


def test_the_validation_refuses_unknown_fields() -> None:
    import jsonschema

    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    (_, job), = [d for d in DOCUMENTS if d[1]["kind"] == "Job"]
    bad_job = copy.deepcopy(job)
    bad_job["spec"]["template"]["spec"]["containers"][0]["argz"] = ["run"]
    with pytest.raises(kubernetes_validate.ValidationError, match="argz"):
        kubernetes_validate.validate(bad_job, KUBERNETES_VERSION, strict=True)

    (_, cluster), = [d for d in DOCUMENTS if d[1]["kind"] == "DaskCluster"]
    crd = _crd("DaskCluster")
    schema = _strict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"])
    bad = copy.deepcopy(cluster["spec"])
    bad["worker"]["spec"]["containers"][0]["argz"] = ["worker"]
    with pytest.raises(jsonschema.ValidationError, match="argz"):
        jsonschema.validate(bad, schema)


def _pod_specs() -> dict[str, dict[str, Any]]:
    specs = {}
    for _, doc in DOCUMENTS:
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind == "DaskCluster":
            specs[f"{name}/scheduler"] = doc["spec"]["scheduler"]["spec"]
            specs[f"{name}/worker"] = doc["spec"]["worker"]["spec"]
        elif kind == "DaskWorkerGroup":
            specs[name] = doc["spec"]["worker"]["spec"]
        elif kind == "Job":
            specs[name] = doc["spec"]["template"]["spec"]
        elif kind == "Pod":
            specs[name] = doc["spec"]
    return specs


def test_every_pod_mounts_the_shared_claim_at_data_and_runs_the_hcsgraph_image() -> None:
    (claim,) = [doc["metadata"]["name"] for _, doc in DOCUMENTS if doc["kind"] == "PersistentVolumeClaim"]
    for where, spec in _pod_specs().items():
        volumes = {v["name"]: v for v in spec["volumes"]}
        (container,) = spec["containers"]
        (mount,) = container["volumeMounts"]
        assert mount["mountPath"] == "/data", where
        assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == claim, where
        assert container["image"].rsplit("/", 1)[-1].startswith("hcsgraph:0.1.0"), where


def test_gpu_workers_ask_for_one_gpu_and_offer_the_gpu_resource() -> None:
    (_, group), = [d for d in DOCUMENTS if d[1]["kind"] == "DaskWorkerGroup"]
    (cluster_name,) = [doc["metadata"]["name"] for _, doc in DOCUMENTS if doc["kind"] == "DaskCluster"]
    assert group["spec"]["cluster"] == cluster_name
    (container,) = group["spec"]["worker"]["spec"]["containers"]
    assert str(container["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    args = container["args"]
    assert args[0] == "worker" and args[args.index("--resources") + 1] == "GPU=1"
    assert container["image"].endswith("-gpu")
    cpu = _pod_specs()[f"{cluster_name}/worker"]["containers"][0]
    assert "--resources" not in cpu["args"] and "nvidia.com/gpu" not in cpu["resources"].get("limits", {})


def test_the_client_job_reaches_the_operators_scheduler_service() -> None:
    (cluster_name,) = [doc["metadata"]["name"] for _, doc in DOCUMENTS if doc["kind"] == "DaskCluster"]
    (job,) = [doc for _, doc in DOCUMENTS if doc["kind"] == "Job"]
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["hcsgraph", "run"]
    assert args[args.index("--scheduler") + 1] == f"tcp://{cluster_name}-scheduler:8786"
    assert all(arg.startswith("/data/") for arg in args[2:4])
