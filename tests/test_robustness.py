from pathlib import Path

import numpy as np
import pytest

from fedpipe import config, preflight, stages
from fedpipe.aggregation import mean, screening
from fedpipe.aggregation import robust as robust_aggregation
from fedpipe.aggregation.chain import COMBINERS
from fedpipe.aggregation.outcome import AggregationOutcome
from fedpipe.artifacts.client_registry import ClientRecord
from fedpipe.artifacts.updates import ClientUpdate, load_shard
from fedpipe.config import ConfigError
from fedpipe.simulation import attacks


def _updates(vectors, n=10):
    return [
        ClientUpdate.of(i, np.asarray(v, np.float32), num_examples=n, train_loss=1.0, duration_s=0)
        for i, v in enumerate(vectors)
    ]


def _planted(honest=7, hostile=2, dim=5, seed=0):
    """Honest updates near 1.0 in every coordinate, hostile ones all at +1000 (pulling the
    same way: the worst case for a mean)."""
    rng = np.random.default_rng(seed)
    good = 1.0 + 0.01 * rng.standard_normal((honest, dim))
    bad = np.full((hostile, dim), 1000.0)
    return _updates(np.vstack([good, bad])), good


def test_median_ignores_up_to_f_extreme_vectors():
    updates, good = _planted(honest=5, hostile=4)  # f = 4 < n/2 = 4.5
    result = robust_aggregation.CoordinateMedian(byzantine_clients=4).aggregate(updates)
    assert np.all((result >= good.min(axis=0) - 1e-6) & (result <= good.max(axis=0) + 1e-6))
    fedavg = mean.Mean().combine(updates, mean.ExampleWeighting(), rnd=None).delta
    assert np.abs(fedavg).max() > 50  # FedAvg moves


def test_trimmed_mean_drops_the_extremes_and_averages_the_rest():
    updates, good = _planted(honest=8, hostile=2)
    result = robust_aggregation.TrimmedMean(trim_fraction=0.2, byzantine_clients=2).aggregate(
        updates
    )
    # 2 dropped per side: the two +1000 and the two smallest honest values per coordinate.
    expected = np.sort(good, axis=0)[2:].mean(axis=0)
    assert np.allclose(result, expected, atol=1e-5)


def test_krum_picks_an_honest_update_and_multi_krum_averages_the_honest_ones():
    updates, good = _planted(honest=7, hostile=2)
    krum = robust_aggregation.Krum(byzantine_clients=2)
    assert krum.chosen(updates)[0] < 7 and len(krum.chosen(updates)) == 1
    multi = robust_aggregation.MultiKrum(byzantine_clients=2)  # m = n - f = 7
    assert sorted(multi.chosen(updates)) == list(range(7))
    assert np.allclose(multi.aggregate(updates), good.mean(axis=0), atol=1e-5)


def test_norm_bounding_clips_each_update_before_averaging():
    updates = _updates([[3.0, 4.0], [0.3, 0.4]])  # norms 5 and 0.5
    bounded = robust_aggregation.NormBounding(norm_bound=1.0).on_updates(updates, rnd=None).kept
    result = mean.Mean().combine(bounded, mean.ExampleWeighting(), rnd=None).delta
    assert np.allclose(result, ([0.6, 0.8] + np.array([0.3, 0.4])) / 2)


def test_aggregators_refuse_too_few_updates_naming_the_rule():
    updates, _ = _planted(honest=4, hostile=2)  # n = 6
    with pytest.raises(robust_aggregation.TooFewUpdatesForTolerance, match=r"n >= 2f \+ 3"):
        robust_aggregation.Krum(byzantine_clients=2).aggregate(updates)
    with pytest.raises(robust_aggregation.TooFewUpdatesForTolerance, match=r"n >= 2f \+ 1"):
        robust_aggregation.CoordinateMedian(byzantine_clients=3).aggregate(updates)
    with pytest.raises(robust_aggregation.TooFewUpdatesForTolerance, match="fewer than f = 2"):
        robust_aggregation.TrimmedMean(0.2, byzantine_clients=2).aggregate(updates)


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        (
            {"aggregation.rule": "median", "aggregation.byzantine_clients": 5},
            r"median needs n >= 2f \+ 1",
        ),
        (
            {"aggregation.rule": "krum", "aggregation.byzantine_clients": 4},
            r"krum needs n >= 2f \+ 3",
        ),
        (
            {
                "aggregation.rule": "multi_krum",
                "aggregation.byzantine_clients": 1,
                "aggregation.multi_krum_m": 10,
            },
            "m <= n - f",
        ),
        (
            {"aggregation.rule": "trimmed_mean", "aggregation.byzantine_clients": 2},
            "fewer than f = 2",
        ),
        (
            {"aggregation.rule": "fedavg", "aggregation.byzantine_clients": 1},
            "fedavg tolerates no Byzantine",
        ),
    ],
)
def test_config_refuses_a_cohort_too_small_for_the_aggregator(changes, rule):
    with pytest.raises(ConfigError, match=rule) as err:
        preflight.check(
            config.from_mapping({"data.num_clients": 10, "selection.cohort_size": 10, **changes})
        )
    assert err.value.field == "aggregation.byzantine_clients"


def test_aggregators_needing_individual_updates_are_named_for_secure_aggregation():
    base = config.from_mapping({"selection.cohort_size": 10})
    needs = {name for name, factory in COMBINERS.items() if factory(base).needs_individual_updates}
    assert needs == {"median", "trimmed_mean", "krum", "multi_krum"}
    assert "norm_bounding" in COMBINERS and "norm_bounding" not in needs


def test_screening_catches_a_scaled_update_under_each_policy():
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((9, 50))
    vectors[4] *= 10  # the model-replacement boost
    updates = _updates(vectors)
    flagged = screening.screen_norms(updates, "flag", 3.5)
    assert [(f.client_id, f.action) for f in flagged.flags] == [(4, "flagged")]
    assert "robust z-scores above the cohort median" in flagged.flags[0].reason
    assert len(flagged.kept) == 9
    excluded = screening.screen_norms(updates, "exclude", 3.5)
    assert [u.client_id for u in excluded.kept] == [0, 1, 2, 3, 5, 6, 7, 8]
    down = screening.screen_norms(updates, "downweight", 3.5)
    shrunk = next(u for u in down.kept if u.client_id == 4)
    assert np.linalg.norm(shrunk.vector) < np.linalg.norm(vectors[4]) / 2
    assert screening.screen_norms(updates, "off", 3.5).flags == []


def test_repeated_flags_lower_reliability():
    record = ClientRecord(client_id=0, num_examples=1, label_histogram=[1])
    for _ in range(3):
        record.record_screening(flagged=True)
    assert record.flags == 3 and record.reliability < 0.35
    record.record_screening(flagged=False)
    assert 0.35 < record.reliability < 0.6


def test_attackers_are_a_seeded_fraction_of_the_clients():
    cfg = config.from_mapping(
        {
            "data.num_clients": 20,
            "selection.cohort_size": 10,
            "simulation.attack.kind": "scaling",
            "simulation.attack.fraction": 0.3,
        }
    )
    assert len(attacks.attackers(cfg)) == 6 and attacks.attackers(cfg) == attacks.attackers(cfg)
    assert attacks.attackers(cfg.replace({"seed": 1})) != attacks.attackers(cfg)
    assert attacks.attackers(cfg.replace({"simulation.attack.kind": "none"})) == frozenset()
    y = np.array([0, 1, 9])
    victim = min(attacks.attackers(cfg.replace({"simulation.attack.kind": "label_flip"})))
    assert list(
        attacks.poison_labels(cfg.replace({"simulation.attack.kind": "label_flip"}), victim, y, 10)
    ) == [9, 8, 0]


def _round_one(cfg, tmp_path, name):
    work = tmp_path / name
    stages.initialize(cfg, work / "model", work / "registry", run_name=name)
    shards = stages.select(cfg, 1, work / "registry", work / "cohort")
    stages.broadcast(cfg, work / "model", work / "cohort", work / "plan")
    paths = [work / f"updates_{s}" for s in shards]
    for shard, path in zip(shards, paths, strict=True):
        stages.local_train(cfg, work / "plan", shard, path)
    return work, paths


def test_stages_apply_the_attack_and_screening_excludes_the_scaled_clients(small_config, tmp_path):
    honest_cfg = small_config.replace({"data.num_clients": 9, "selection.cohort_size": 9})
    attack_cfg = honest_cfg.replace(
        {
            "simulation.attack.kind": "scaling",
            "simulation.attack.fraction": 0.2,
            "simulation.attack.scale": 20.0,
        }
    )
    hostile = attacks.attackers(attack_cfg)
    assert len(hostile) == 2
    _, honest_paths = _round_one(honest_cfg, tmp_path, "honest")
    work, attack_paths = _round_one(attack_cfg, tmp_path, "attack")
    honest = {u.client_id: u.vector for p in honest_paths for u in load_shard(p)}
    sent = {u.client_id: u.vector for p in attack_paths for u in load_shard(p)}
    for client_id, vector in sent.items():
        factor = 20.0 if client_id in hostile else 1.0
        assert np.allclose(vector, factor * honest[client_id], atol=1e-5)

    screened = attack_cfg.replace(
        {
            "aggregation.screening.policy": "exclude",
            "aggregation.rule": "median",
            "aggregation.byzantine_clients": 2,
        }
    )
    outcome = stages.aggregate(
        screened, work / "plan", work / "model", attack_paths, work / "new", work / "outcome"
    )
    assert {r.client_id for r in outcome.rejected} == set(hostile)
    assert {f.client_id for f in outcome.flagged} == set(hostile)
    assert "| flagged client | action | reason |" in outcome.to_markdown()
    assert AggregationOutcome.load(work / "outcome").flagged == outcome.flagged


def test_robustness_table_is_the_mean_and_std_of_the_seeds_rows():
    from fedpipe.experiments import robustness

    def cell(seed, defence, attack, fraction, accuracy):
        return robustness.Cell(seed, defence, attack, fraction, 0, accuracy, accuracy, 1.0)

    cells = [
        cell(0, "median", "none", 0.0, 0.80),
        cell(1, "median", "none", 0.0, 0.84),
        cell(0, "median", "scaling", 0.1, 0.70),
        cell(1, "median", "scaling", 0.1, 0.70),
    ]
    summary = robustness.summary(cells)
    assert summary[("median", "none", 0.0)].mean == pytest.approx(0.82)
    assert summary[("median", "none", 0.0)].std == pytest.approx(np.std([0.80, 0.84], ddof=1))
    assert summary[("median", "scaling", 0.1)].std == 0.0  # the seeds agree
    row = robustness.to_markdown(cells).splitlines()[-1]
    assert row.startswith("| median | 0.820 ± 0.028 |  |  | 0.700 ± 0.000 |")
    assert "mean ± sample std over seeds 0, 1" in robustness.to_markdown(cells)


def test_robustness_experiment_over_two_seeds_logs_the_table_to_mlflow(mlflow_uri, tmp_path):
    """A tiny run with two seeds: each cell once per seed in the CSV, the table and the
    MLflow metrics their mean and std, the MLflow run holding the same table."""
    import csv

    from click.testing import CliRunner

    from fedpipe.cli import main
    from fedpipe.experiments import robustness
    from fedpipe.ops import tracking

    out = tmp_path / "robustness"
    sets = [
        "data.dataset=digits",
        "data.data_dir=null",
        "training.rounds=1",
        f"tracking.uri={mlflow_uri}",
    ]
    result = CliRunner().invoke(
        main,
        ["experiment", "robustness", "--defences", "median", "--seeds", "0,1", "--jobs", "2"]
        + ["-o", str(out)]
        + [arg for s in sets for arg in ("--set", s)],
    )
    assert result.exit_code == 0, result.output
    with (out / "robustness.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 9 and {r["seed"] for r in rows} == {"0", "1"}
    per_seed = {}
    for r in rows:
        per_seed.setdefault((r["attack"], float(r["attack_fraction"])), []).append(
            float(r["accuracy"])
        )
    assert all(len(accs) == 2 for accs in per_seed.values())
    table = (out / "robustness.md").read_text()
    assert "| median |" in table and (out / "robustness.png").read_bytes()[:4] == b"\x89PNG"

    cfg = config.from_mapping(
        {"tracking.uri": mlflow_uri, "tracking.experiment": "fedpipe-robustness"}
    )
    client = tracking.client(cfg)
    run = client.search_runs(
        [tracking.experiment_id(cfg)], "tags.`fedpipe.experiment` = 'robustness'"
    )[0]
    assert run.data.params["seeds"] == "[0, 1]"
    for (attack, fraction), accs in per_seed.items():
        key = f"median/{attack}/{round(fraction * 100)}pct"
        assert run.data.metrics[f"accuracy/{key}"] == pytest.approx(np.mean(accs))
        std = run.data.metrics[f"accuracy_std/{key}"]
        assert std == pytest.approx(np.std(accs, ddof=1))
        assert (std == 0) == (accs[0] == accs[1])
        assert f"{np.mean(accs):.3f} ± {np.std(accs, ddof=1):.3f}" in table
    # Different seeds split the data differently: not every cell agrees across seeds.
    assert any(accs[0] != accs[1] for accs in per_seed.values())
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "robustness")}
    assert artifacts == {f"robustness/robustness.{ext}" for ext in ("csv", "md", "png")}
    logged = client.download_artifacts(run.info.run_id, "robustness/robustness.md", tmp_path)
    assert (
        Path(logged).read_text()
        == table
        == robustness.to_markdown([robustness.Cell(**_typed(r)) for r in rows])
    )


def _typed(row: dict) -> dict:
    """A robustness.csv row as Cell fields."""
    return {
        "seed": int(row["seed"]),
        "defence": row["defence"],
        "attack": row["attack"],
        "attack_fraction": float(row["attack_fraction"]),
        "attackers": int(row["attackers"]),
        "accuracy": float(row["accuracy"]),
        "worst_accuracy": float(row["worst_accuracy"]),
        "seconds": float(row["seconds"]),
    }
