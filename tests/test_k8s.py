"""KubeRay manifests: strict schema validation, entrypoints that exist and parse, versions that match."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
CRDS = ROOT.parent / "shared" / "kuberay-crds"
IMAGE_ROOT = "/home/ray/raypipe"  # where the Dockerfile puts the project


def manifests() -> list[tuple[Path, dict]]:
    docs = []
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [(path, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def settings() -> dict[str, str]:
    lines = (K8S / "settings.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def _strict(schema):
    """additionalProperties: false on every object schema listing properties (unless it keeps unknowns)."""
    if isinstance(schema, dict):
        if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema.setdefault("additionalProperties", False)
        for value in schema.values():
            _strict(value)
    elif isinstance(schema, list):
        for value in schema:
            _strict(value)
    return schema


@pytest.fixture(scope="module")
def crd_schemas() -> dict[str, dict]:
    if not CRDS.is_dir():
        pytest.skip(f"KubeRay CRDs not available ({CRDS} is absent outside the developers' checkout)")
    schemas = {}
    for path in CRDS.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
        schemas[crd["spec"]["names"]["kind"]] = _strict(version["schema"]["openAPIV3Schema"])
    return schemas


def test_every_manifest_is_known_and_valid(crd_schemas):
    import jsonschema
    import kubernetes_validate

    kinds = set()
    for path, doc in manifests():
        kinds.add(doc["kind"])
        if doc["apiVersion"].startswith("ray.io/"):
            assert doc["apiVersion"] == "ray.io/v1", path
            jsonschema.validate(doc, crd_schemas[doc["kind"]])
        else:
            kubernetes_validate.validate(doc, "1.31", strict=True)
    assert {"RayCluster", "RayJob", "RayCronJob", "CronJob", "ServiceAccount", "Role", "RoleBinding"} <= kinds


def test_strict_validation_catches_a_misspelt_field(crd_schemas):
    import jsonschema

    job = next(d for p, d in manifests() if d["kind"] == "RayJob" and "rayClusterSpec" in d["spec"])
    bad = {**job, "spec": {**job["spec"], "shutdownAfterJobFinished": True}}
    with pytest.raises(jsonschema.ValidationError, match="shutdownAfterJobFinished"):
        jsonschema.validate(bad, crd_schemas["RayJob"])


def test_cluster_shape():
    cluster = next(d for _, d in manifests() if d["kind"] == "RayCluster")
    spec = cluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    gpu = next(g for g in spec["workerGroupSpecs"] if g["groupName"] == "gpu")
    assert gpu["minReplicas"] == 0 and gpu["replicas"] == 0
    pod = gpu["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    train = next(d for _, d in manifests() if d["kind"] == "RayJob" and "rayClusterSpec" in d["spec"])
    assert train["spec"]["shutdownAfterJobFinishes"] is True and train["spec"]["ttlSecondsAfterFinished"] > 0
    assert "$RAYPIPE_RUNS_URI" in train["spec"]["entrypoint"] and settings()["RAYPIPE_RUNS_URI"].startswith("s3://")


def _containers(doc):
    if isinstance(doc, dict):
        if "containers" in doc:
            yield from doc["containers"]
        for value in doc.values():
            yield from _containers(value)
    elif isinstance(doc, list):
        for value in doc:
            yield from _containers(value)


def test_credentials_only_from_secrets():
    for path, doc in manifests():
        for container in _containers(doc):
            for env in container.get("env", []):
                if re.search(r"SECRET|KEY|TOKEN|PASSWORD", env["name"]):
                    assert "value" not in env and "secretKeyRef" in env["valueFrom"], (path, env["name"])
    assert not ({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} & set(settings()))


def _entrypoints() -> list[tuple[Path, str]]:
    out = []
    for path, doc in manifests():
        if doc["kind"] == "RayJob":
            out.append((path, doc["spec"]["entrypoint"]))
        elif doc["kind"] == "RayCronJob":
            out.append((path, doc["spec"]["jobTemplate"]["entrypoint"]))
    return out


def test_entrypoints_name_scripts_whose_flags_parse():
    from raypipe.cli import build_parser

    env = settings()
    entrypoints = _entrypoints()
    assert len(entrypoints) == 3
    for path, entrypoint in entrypoints:
        expanded = re.sub(r"\$(\w+)", lambda m: env[m.group(1)], entrypoint)
        argv = [a.replace(IMAGE_ROOT, str(ROOT)) for a in shlex.split(expanded)]
        assert argv[0] == "python", path
        script = Path(argv[1])
        assert script.is_file() and script.parent == ROOT / "jobs", (path, script)
        for arg in argv[2:]:
            if arg.startswith(str(ROOT)):
                assert Path(arg).is_file(), (path, arg)
        build_parser().parse_args([script.stem, *argv[2:]])  # raises SystemExit on a bad flag
        done = subprocess.run([sys.executable, str(script), *argv[2:], "--help"], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert done.returncode == 0 and "usage:" in done.stdout, (path, done.stderr)


def test_kustomizations_reference_existing_files():
    for kustomization in K8S.rglob("kustomization.yaml"):
        spec = yaml.safe_load(kustomization.read_text())
        for resource in spec["resources"]:
            assert (kustomization.parent / resource).exists(), (kustomization, resource)
        for generator in spec.get("configMapGenerator", []):
            for name in generator.get("envs", []) + generator.get("files", []):
                assert (kustomization.parent / name).is_file(), (kustomization, name)
    label_template = yaml.safe_load((K8S / "rayjob-label.yaml").read_text())
    cron = yaml.safe_load((K8S / "raycronjob" / "raycronjob-label.yaml").read_text())
    assert cron["spec"]["jobTemplate"]["entrypoint"] == label_template["spec"]["entrypoint"]


def test_image_matches_the_project_pins():
    dockerfile = (ROOT / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", dockerfile, re.MULTILINE))
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    ray_pin = next(re.search(r"==([\d.]+)", d).group(1) for d in dependencies if d.startswith("ray["))
    assert args["RAY_VERSION"] == ray_pin
    python = (ROOT / ".python-version").read_text().strip()
    assert args["PYTHON"] == "py" + python.replace(".", "")
    assert f"{sys.version_info.major}.{sys.version_info.minor}" == python
    assert re.search(r"^FROM rayproject/ray:\$\{RAY_VERSION\}-\$\{PYTHON\}-\$\{VARIANT\}$", dockerfile, re.MULTILINE)
    for _, doc in manifests():
        spec = doc.get("spec", {})
        version = spec.get("rayVersion") or spec.get("rayClusterSpec", {}).get("rayVersion")
        if version:
            assert version == ray_pin


def test_labelling_pods_reach_the_catalog():
    """An s3:// labels table needs a catalog every pod reaches: the Secret's URL names the Postgres Service."""
    docs = manifests()
    cluster = next(d for _, d in docs if d["kind"] == "RayCluster")
    groups = [cluster["spec"]["headGroupSpec"]] + cluster["spec"]["workerGroupSpecs"]
    for group in groups:
        for container in group["template"]["spec"]["containers"]:
            env = {e["name"]: e for e in container.get("env", [])}
            assert env["RAYPIPE_CATALOG"]["valueFrom"]["secretKeyRef"] == {"name": "raypipe-catalog",
                                                                          "key": "RAYPIPE_CATALOG"}
    service = next(d for _, d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "raypipe-catalog")
    statefulset = next(d for _, d in docs if d["kind"] == "StatefulSet")
    assert service["spec"]["selector"] == statefulset["spec"]["template"]["metadata"]["labels"]
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert "postgres.yaml" in kustomization["resources"]
