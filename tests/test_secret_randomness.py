"""Secrets from the OS's cryptographic source: the attacks that worked when every secret
came from the run seed, mounted again. In the default (secure) mode they fail; in the
reproducible-simulation research mode they still work, which shows the tests can fail and
why that mode is tagged as giving no privacy guarantee."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from fedpipe import cli, secagg
from fedpipe.aggregation.clipping import clip_l2
from fedpipe.artifacts.round_plan import RoundPlan
from fedpipe.artifacts.updates import ClientUpdate, load_shard
from fedpipe.data import partition
from fedpipe.ops import tracking
from fedpipe.privacy import randomness
from fedpipe.secagg import primitives
from fedpipe.secagg import rounds as sa
from fedpipe.secagg.quantization import TRAILING_WORDS
from fedpipe.simulation.runner import simulate
from fedpipe.training import trainer
from tests.dp_chain import private_mean

REPRODUCIBLE = "reproducible-simulation"


@pytest.fixture
def secure_dp(small_config):
    return small_config.replace(
        {
            "training.rounds": 1,
            "training.local_epochs": 1,
            "aggregation.secure.mode": "secagg",
            "aggregation.dp.clip_norm": 0.05,
            "aggregation.dp.noise_multiplier": 1.0,
            "aggregation.dp.delta": 1e-3,
        }
    )


def _seed_guesses(config, session: secagg.Session, client: int) -> list[bytes]:
    """What someone who knows the seed (an MLflow param) regenerates: main's old
    derivation of a simulated client's entropy, and the reproducible-mode derivation."""
    old = primitives.derive(
        b"fedpipe-simulated-client-entropy",
        f"{config.seed}/{session.round_number}/{client}".encode(),
    )
    seeded = randomness.of(REPRODUCIBLE, config.seed)
    return [old, seeded.token_bytes(32, "secagg-entropy", session.session_id, client)]


def _unmask_with(session, ads, masked: np.ndarray, client: int, entropy: bytes) -> np.ndarray:
    """The attack: rebuild the client's self and pairwise masks from guessed entropy and
    the public keys of the transcript, and remove them from its masked input."""
    guess = secagg.SecAggClient(session, client, entropy)
    guess._advertised = {a.client_id: a for a in ads if a.client_id != client}
    guess._masked_with = session.neighbours[client]
    zeros = np.zeros(session.vector_length, session.encoding.word)
    return masked - guess.masked_input(zeros).vector


def _attack(config, run_dir) -> list[np.ndarray]:
    plan = RoundPlan.load(run_dir / "round_001/plan.npz")
    session = sa.session_for(config, plan.cohort, plan.spec.size)
    records = json.loads((run_dir / "round_001/secagg_keys.json").read_text())
    ads = [secagg.KeyAdvertisement.from_dict(m) for r in records for m in r["messages"]]
    (masked,) = [u.vector for u in load_shard(run_dir / "round_001/updates_0.npz")[:1]]
    return [_unmask_with(session, ads, masked, 0, e) for e in _seed_guesses(config, session, 0)]


def test_seed_and_transcript_no_longer_unmask_a_client_and_runs_draw_new_secrets(
    secure_dp, tmp_path
):
    runs = {}
    for mode in ("secure", REPRODUCIBLE):
        cfg = secure_dp.replace({"privacy.mode": mode})
        for k in (1, 2):
            runs[mode, k] = (cfg, simulate(cfg, tmp_path / f"{mode}{k}", register=False))
    weight = secure_dp.aggregation.secure.max_examples  # under DP every client's weight word
    # Reproducible mode: seed + transcript + one masked vector give the update back.
    cfg, _ = runs[REPRODUCIBLE, 1]
    recovered = _attack(cfg, tmp_path / f"{REPRODUCIBLE}1")[1]
    assert int(recovered[-1]) == weight
    signed = recovered[:-TRAILING_WORDS].view(np.int32) / 2**cfg.aggregation.secure.fractional_bits
    assert np.abs(signed).max() < 1.0  # a plausible (clipped, noised) delta
    # Secure mode: no guess from the seed removes the masks.
    cfg, _ = runs["secure", 1]
    for guess in _attack(cfg, tmp_path / "secure1"):
        assert int(guess[-1]) != weight
        assert np.abs(guess[:-TRAILING_WORDS].view(np.int32)).mean() > 2**28  # still uniform words
    # Same seed, default mode: other session ids, other masks, other noise, other models.
    masked = {
        key: load_shard(tmp_path / f"{key[0]}{key[1]}/round_001/updates_0.npz")[0].vector
        for key in runs
    }
    plans = {key: RoundPlan.load(tmp_path / f"{key[0]}{key[1]}/round_001/plan.npz") for key in runs}
    assert plans["secure", 1].cohort.session_id != plans["secure", 2].cohort.session_id
    assert not np.array_equal(masked["secure", 1], masked["secure", 2])
    model = {key: result.model.weights for key, (_, result) in runs.items()}
    assert np.abs(model["secure", 1] - model["secure", 2]).max() > 1e-4
    # Reproducible mode: the same seed replays exactly.
    assert plans[REPRODUCIBLE, 1].cohort.session_id == plans[REPRODUCIBLE, 2].cohort.session_id
    assert np.array_equal(masked[REPRODUCIBLE, 1], masked[REPRODUCIBLE, 2])
    assert np.array_equal(model[REPRODUCIBLE, 1], model[REPRODUCIBLE, 2])
    # Client state lives under <run folder>/clients/<id>, private to the client.
    assert (tmp_path / "secure1/clients/0").stat().st_mode & 0o777 == 0o700


def test_released_dp_noise_cannot_be_regenerated_and_subtracted():
    from fedpipe import config

    cfg = config.from_mapping(
        {
            "data.num_clients": 100,
            "selection.cohort_size": 10,
            "aggregation.dp.clip_norm": 1.0,
            "aggregation.dp.noise_multiplier": 1.0,
            "aggregation.dp.delta": 1e-3,
        }
    )
    rng = np.random.default_rng(0)
    vectors = [rng.normal(0, 0.01, 1000).astype(np.float32) for _ in range(8)]
    updates = [
        ClientUpdate.of(i, v, num_examples=5, train_loss=0, duration_s=0)
        for i, v in enumerate(vectors)
    ]
    clipped_sum = np.sum([clip_l2(v, 1.0)[0] for v in vectors], axis=0)

    def residual(config_used) -> float:
        released = private_mean(config_used, updates, 3, {})[0] * 10
        guesses = [  # the old seeded stream, and the reproducible-mode stream
            np.random.default_rng([config_used.seed, 3, 0xD9F1]),
            randomness.of(REPRODUCIBLE, config_used.seed).generator("dp-noise", 3),
        ]
        return min(
            float(np.abs(released - g.normal(0.0, 1.0, 1000) - clipped_sum).max()) for g in guesses
        )

    assert residual(cfg.replace({"privacy.mode": REPRODUCIBLE})) < 1e-5  # the attack works there
    assert residual(cfg) > 1.0  # and not in the default mode


def test_dp_sgd_noise_is_secret_in_the_default_mode():
    from fedpipe import config

    deltas = {}
    for mode in ("secure", REPRODUCIBLE):
        cfg = config.from_mapping(
            {
                "data.num_clients": 6,
                "selection.cohort_size": 6,
                "training.dp_sgd_clip_norm": 1.0,
                "training.dp_sgd_noise_multiplier": 1.0,
                "privacy.mode": mode,
            }
        )
        x, y = partition.client_data(cfg, 0)
        model_trainer = trainer.for_config(cfg)
        deltas[mode] = [
            model_trainer.train(
                model_trainer.initial_weights(),
                x,
                y,
                epochs=1,
                batch_size=32,
                learning_rate=0.1,
                mu=0.0,
                seed=[cfg.seed, 1, 0],
            ).delta
            for _ in range(2)
        ]
    assert np.abs(deltas["secure"][0] - deltas["secure"][1]).max() > 1e-3
    assert np.array_equal(deltas[REPRODUCIBLE][0], deltas[REPRODUCIBLE][1])


def test_reproducible_mode_is_tagged_and_refused_by_compile(small_config, tmp_path):
    cfg = small_config.replace(
        {"training.rounds": 1, "training.local_epochs": 1, "privacy.mode": REPRODUCIBLE}
    )
    result = simulate(cfg, tmp_path / "sim")
    client = tracking.client(cfg)
    tags = client.get_run(result.mlflow_run_id).data.tags
    assert tags[randomness.GUARANTEE_TAG] == "none (reproducible-simulation mode)"
    version = client.get_model_version(
        cfg.tracking.registered_model_name, result.registration.version
    )
    assert version.tags[randomness.GUARANTEE_TAG] == "none (reproducible-simulation mode)"
    secure = simulate(
        small_config.replace({"training.rounds": 1, "training.local_epochs": 1}),
        tmp_path / "secure",
    )
    assert randomness.GUARANTEE_TAG not in client.get_run(secure.mlflow_run_id).data.tags

    runner = CliRunner()
    out = tmp_path / "pipeline.yaml"
    refused = runner.invoke(
        cli.main, ["compile", "--set", f"privacy.mode={REPRODUCIBLE}", "-o", str(out)]
    )
    assert refused.exit_code != 0 and "refusing to compile" in refused.output
    assert not out.exists()
    forced = runner.invoke(
        cli.main, ["compile", "--set", f"privacy.mode={REPRODUCIBLE}", "--force", "-o", str(out)]
    )
    assert forced.exit_code == 0, forced.output
    assert out.exists()
