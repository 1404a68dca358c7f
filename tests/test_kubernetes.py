"""Compiling for a cluster: secrets reach the pods as references, pods are sized, the
shared state volume is mounted, and no secret value lands in the compiled YAML."""

import yaml
from click.testing import CliRunner

from fedpipe.cli import main
from fedpipe.ops.kubernetes import ClusterSettings, Resources


def _compile(tmp_path, monkeypatch, *args):
    # Credentials in the compiling process's environment must not leak into the YAML.
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "compile-env-secret-value")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "compile-env-password")
    out = tmp_path / "pipelines"
    result = CliRunner().invoke(
        main,
        [
            "compile",
            "--rounds",
            "2",
            "--image",
            "registry.example/fedpipe-runtime:0.1.0",
            "--set",
            "tracking.uri=http://mlflow.fedpipe.svc:5000",
            "-o",
            str(out),
            *args,
        ],
    )
    assert result.exit_code == 0, result.output
    return (out / "segment-first-2-rounds-register.yaml").read_text()


def test_kubernetes_target_mounts_secrets_sizes_pods_and_holds_no_secret(tmp_path, monkeypatch):
    settings = tmp_path / "cluster.yaml"
    settings.write_text(
        "s3_endpoint: http://minio.fedpipe.svc:9000\n"
        "gcs_secret: fedpipe-gcs\n"
        "training: {memory_limit: 6Gi}\n"
    )
    text = _compile(
        tmp_path, monkeypatch, "--target", "kubernetes", "--cluster-settings", str(settings)
    )
    assert "compile-env-secret-value" not in text and "compile-env-password" not in text
    spec, platform = yaml.safe_load_all(text)
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(executors) == set(spec["deploymentSpec"]["executors"])  # every task
    train = executors["exec-local-train"]
    by_secret = {s["secretName"]: s for s in train["secretAsEnv"]}
    assert {k["envVar"] for k in by_secret["fedpipe-s3"]["keyToEnv"]} == {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    }
    assert not by_secret["fedpipe-s3"]["optional"]
    assert {k["envVar"] for k in by_secret["fedpipe-mlflow"]["keyToEnv"]} == {
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
    }
    assert train["secretAsVolume"][0]["secretName"] == "fedpipe-gcs"
    assert train["pvcMount"][0]["mountPath"] == "/fedpipe/state"

    container = spec["deploymentSpec"]["executors"]["exec-local-train"]["container"]
    assert container["image"] == "registry.example/fedpipe-runtime:0.1.0"
    assert container["resources"]["resourceCpuRequest"] == "1"
    assert container["resources"]["resourceMemoryRequest"] == "2Gi"
    assert container["resources"]["resourceMemoryLimit"] == "6Gi"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["AWS_ENDPOINT_URL"] == "http://minio.fedpipe.svc:9000"
    assert env["GOOGLE_APPLICATION_CREDENTIALS"] == "/var/secrets/gcs/key.json"
    init = spec["deploymentSpec"]["executors"]["exec-initialize"]["container"]
    assert init["resources"]["resourceMemoryRequest"] == "1Gi"


def test_local_target_has_no_platform_spec(tmp_path, monkeypatch):
    docs = list(yaml.safe_load_all(_compile(tmp_path, monkeypatch)))
    assert len(docs) == 1
    assert (
        "resources" not in docs[0]["deploymentSpec"]["executors"]["exec-local-train"]["container"]
    )


def test_cluster_settings_file_is_checked(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("s3_secrett: x\n")
    result = CliRunner().invoke(
        main,
        [
            "compile",
            "--target",
            "kubernetes",
            "--cluster-settings",
            str(bad),
            "-o",
            str(tmp_path / "o.yaml"),
        ],
    )
    assert result.exit_code != 0 and "s3_secrett" in result.output
    loaded = ClusterSettings.load(None)
    assert loaded.training == Resources("1", "2", "2Gi", "4Gi")


def test_injected_faults_keep_their_state_on_the_shared_volume():
    from fedpipe import config
    from fedpipe.ops import kubernetes

    faulty = config.from_mapping(
        {"simulation.faults.task_crash_rate": 0.2, "pipeline.task_retries": 1}
    )
    state = kubernetes.cluster_config(faulty, ClusterSettings()).simulation.faults.state_dir
    assert state.startswith("/fedpipe/state/") and state.endswith("/faults")
    plain = kubernetes.cluster_config(config.RunConfig(), ClusterSettings())
    assert plain.simulation.faults.state_dir is None
    no_volume = ClusterSettings(state_pvc=None)
    assert kubernetes.cluster_config(faulty, no_volume).simulation.faults.state_dir is None
