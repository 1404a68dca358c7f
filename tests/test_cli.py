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


def test_compile_writes_a_pipeline(tmp_path):
    out = tmp_path / "federated_training.yaml"
    result = CliRunner().invoke(main, ["compile", "--rounds", "10", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "federated-round-10" in out.read_text()
