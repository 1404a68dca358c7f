from click.testing import CliRunner

from fedpipe.cli import main


def test_bad_config_is_refused_before_anything_runs(tmp_path):
    result = CliRunner().invoke(
        main, ["simulate", "--set", "data.num_clients=1", "--workdir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert (
        "config field 'data.num_clients' = 1 is not allowed: an integer in [2, 100000]"
        in result.output
    )
    assert not any(tmp_path.iterdir())


def test_set_needs_field_equals_value():
    result = CliRunner().invoke(main, ["simulate", "--set", "training.rounds"])
    assert result.exit_code == 2 and "of the form section.field=value" in result.output


def test_compile_writes_the_segment_pipelines_with_their_estimated_size(tmp_path):
    out = tmp_path / "federated_training"
    result = CliRunner().invoke(
        main,
        ["compile", "--rounds", "25", "--set", "pipeline.rounds_per_segment=10", "-o", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "register.yaml",
        "segment-continued-10-rounds.yaml",
        "segment-continued-5-rounds-register.yaml",
        "segment-first-10-rounds.yaml",
    ]
    assert "federated-round-10" in (out / "segment-first-10-rounds.yaml").read_text()
    assert "estimated Argo workflow" in result.output and ": ok" in result.output


def test_compile_refuses_a_segment_a_default_backend_would_refuse(tmp_path):
    out = tmp_path / "federated_training"
    result = CliRunner().invoke(
        main,
        ["compile", "--rounds", "40", "--set", "pipeline.rounds_per_segment=40", "-o", str(out)],
    )
    assert result.exit_code == 1
    assert "would exceed what a default KFP backend" in result.output
    assert "lower pipeline.rounds_per_segment" in result.output
    assert not (out / "segment-first-40-rounds-register.yaml").exists()
