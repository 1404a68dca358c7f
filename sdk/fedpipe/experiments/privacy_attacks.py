"""Privacy attacks on fedpipe's federated training: what a curious server or a model user
learns, with and without secure aggregation and DP.

- Update inversion (fedpipe.privacy.inversion) against one client's plain update (local
  batch 1 and 8, one local step and one local epoch) and against the cohort's mean that the
  server decodes under SecAgg, on MNIST and the 2NN MLP at its initial weights.
- Membership inference (fedpipe.privacy.membership) against the final model of a
  simulated federation, plain FedAvg and DP-FedAvg at several epsilons; members are the
  federation's training pool, non-members held-out examples the training never saw.

Every figure is repeated over seeds; the table gives mean ± std. A summary MLflow run holds
the table, the per-seed rows, the ROC curves and a sample of reconstructions.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import statistics
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedpipe.config import RunConfig
from fedpipe.experiments.seeds import mean_std
from fedpipe.ops import tracking
from fedpipe.privacy import accounting as privacy_accounting
from fedpipe.privacy import inversion, membership

if TYPE_CHECKING:
    from matplotlib.figure import Figure

NAME = "privacy-attacks"

# Inversion: the MNIST reference model (2NN, 200 units) at its seeded initial weights, SGD
# 0.1, as a client in configs/mnist.yaml trains it; a SecAgg cohort of 10 clients.
INVERSION = {
    "dataset": "mnist",
    "data_dir": "../shared/data/mnist",
    "model": "mlp",
    "hidden_units": 200,
    "client_learning_rate": 0.1,
    "cohort_size": 10,
    "num_clients": 10,
    "mlflow_experiment": "fedpipe-experiments",
}
# Membership: half of MNIST's 10k held out, so that there are as many non-members to test
# as members; 50 IID clients of 100 examples, cohorts of 10 (q = 0.2), 15 rounds of 5 local
# epochs (sized for a shared 2-core machine; --set scales it up).
MEMBERSHIP = {
    "dataset": "mnist",
    "data_dir": "../shared/data/mnist",
    "heldout_fraction": 0.5,
    "partitioner": "iid",
    "num_clients": 50,
    "cohort_size": 10,
    "clients_per_shard": 10,
    "rounds": 15,
    "local_epochs": 5,
    "batch_size": 16,
    "model": "mlp",
    "hidden_units": 200,
    "dp_delta": 1e-3,
    "mlflow_experiment": "fedpipe-experiments",
    "registered_model_name": "fedpipe-privacy-attacks",
}
EPSILONS = (math.inf, 8.0, 3.0, 1.0)


@dataclasses.dataclass(frozen=True)
class InversionSetting:
    view: str  # "plain": one client's update; "secagg": the cohort's decoded mean
    batch_size: int
    steps: int  # local SGD steps; one epoch = examples / batch_size steps
    label: str

    @property
    def examples_per_client(self) -> int:
        return self.batch_size * self.steps


INVERSION_SETTINGS = (
    InversionSetting("plain", 1, 1, "plain B=1, 1 step"),
    InversionSetting("plain", 8, 1, "plain B=8, 1 step"),
    InversionSetting("plain", 1, 8, "plain B=1, 1 epoch (8 examples)"),
    InversionSetting("plain", 8, 2, "plain B=8, 1 epoch (16 examples)"),
    InversionSetting("secagg", 1, 1, "SecAgg sum of 10, B=1, 1 step"),
    InversionSetting("secagg", 8, 1, "SecAgg sum of 10, B=8, 1 step"),
)


@dataclasses.dataclass(frozen=True)
class InversionRow:
    setting: str
    seed: int
    images: int  # real images behind what the attacker sees
    psnr: float
    ssim: float
    label_recovery: float
    baseline_psnr: float  # uniform noise against the same images
    baseline_ssim: float
    final_loss: float


@dataclasses.dataclass(frozen=True)
class MembershipRow:
    epsilon: float
    noise_multiplier: float | None
    seed: int
    accuracy: float
    loss_auc: float
    loss_tpr: float  # at 1% FPR
    calibrated_auc: float
    calibrated_tpr: float


def _secagg_mean(config: RunConfig, deltas: list[np.ndarray], counts: list[int]):
    """What aggregate decodes under SecAgg: the fixed-point, example-weighted mean (the
    pairwise masks cancel in the sum, so they are left out here)."""
    from fedpipe.secagg.quantization import FixedPoint

    encoding = FixedPoint(
        config.aggregation.secure.clip,
        config.aggregation.secure.fractional_bits,
        config.aggregation.secure.max_examples,
        config.selection.cohort_size,
    )
    words = [encoding.encode(d, n) for d, n in zip(deltas, counts, strict=True)]
    total = np.zeros_like(words[0])
    for w in words:
        total = total + w  # wraps mod 2^word, as the masked sum does
    return encoding.decode_mean(total)


def run_inversion(
    base: RunConfig, setting: InversionSetting, seed: int, iterations: int
) -> tuple[InversionRow, np.ndarray, np.ndarray]:
    """One attack; returns its row, the real images and their matched reconstructions."""
    from fedpipe.training import trainer

    cfg = base.replace({"seed": seed})
    model_trainer = trainer.for_config(cfg)
    data, shape = model_trainer.data, model_trainer.data.image_shape
    rng = np.random.default_rng([seed, 0x1A7])
    clients = cfg.selection.cohort_size if setting.view == "secagg" else 1
    per_client = setting.examples_per_client
    chosen = rng.choice(len(data.y_train), clients * per_client, replace=False)
    x, y = data.x_train[chosen], data.y_train[chosen]
    start = model_trainer.initial_weights()
    deltas = [
        model_trainer.train(
            start,
            x[i * per_client : (i + 1) * per_client],
            y[i * per_client : (i + 1) * per_client],
            epochs=1,
            batch_size=setting.batch_size,
            learning_rate=cfg.training.learning_rate,
            mu=0.0,
            seed=[seed, i],
        ).delta
        for i in range(clients)
    ]
    if setting.view == "secagg":
        delta, total = _secagg_mean(cfg, deltas, [per_client] * clients)
        # One local step each: the mean is one step on the union of the batches.
        observed_batch, steps = int(total), 1
    else:
        delta, total = deltas[0], per_client
        observed_batch, steps = setting.batch_size, setting.steps
    observed = inversion.Observed(
        delta=model_trainer.spec.split(delta),
        weights=model_trainer.spec.split(start),
        num_examples=int(total),
        batch_size=observed_batch,
        steps=steps,
        learning_rate=cfg.training.learning_rate,
    )
    labels = inversion.recover_labels(observed, data.num_classes, seed=seed)
    rebuilt = inversion.reconstruct(
        observed, labels, iterations=iterations, image_shape=shape, seed=seed
    )
    scored = inversion.score(rebuilt, x, y, shape)
    base_psnr, base_ssim = inversion.random_baseline(x, shape, seed=seed)
    row = InversionRow(
        setting.label,
        seed,
        len(y),
        scored.psnr,
        scored.ssim,
        scored.label_recovery,
        base_psnr,
        base_ssim,
        rebuilt.final_loss,
    )
    return row, x, rebuilt.images[scored.matched]


def noise_for_epsilon(config: RunConfig, epsilon: float) -> float:
    """The smallest noise multiplier (to 1e-3) whose epsilon after training.rounds rounds is
    at most `epsilon`, by bisection on the accountant (epsilon falls as noise grows)."""
    low, high = 0.05, 64.0
    for _ in range(40):
        mid = (low + high) / 2
        spent = privacy_accounting.epsilon(
            config.replace({"aggregation.dp.noise_multiplier": mid}), config.training.rounds
        )
        low, high = (mid, high) if spent > epsilon else (low, mid)
        if high - low < 1e-3:
            break
    return high


def _probabilities(cfg: RunConfig, model_state, x: np.ndarray) -> np.ndarray:
    """The final global model's predicted probabilities (model_state: a GlobalModel)."""
    from fedpipe.data import datasets
    from fedpipe.training import models

    model = models.build(cfg, datasets.load(cfg))
    model.set_weights(model_state.spec.split(model_state.weights))
    return model.predict(x, batch_size=2048, verbose=0)


def reference_probabilities(
    cfg: RunConfig, x_ref: np.ndarray, y_ref: np.ndarray, x: np.ndarray, count: int, epochs: int
) -> list[np.ndarray]:
    """The attacker's reference models: the same architecture trained centrally on random
    halves of its own population sample (disjoint from every candidate)."""
    import keras

    from fedpipe.data import datasets
    from fedpipe.training import models

    data = datasets.load(cfg)
    rng = np.random.default_rng([cfg.seed, 0x8EF])
    out = []
    for r in range(count):
        half = rng.choice(len(y_ref), len(y_ref) // 2, replace=False)
        model = models.build(cfg.replace({"seed": (cfg.seed * 131 + r + 1) % 2**31}), data)
        optimizer = keras.optimizers.SGD(cfg.training.learning_rate)
        model.compile(optimizer, "sparse_categorical_crossentropy")
        model.fit(
            x_ref[half], y_ref[half], batch_size=cfg.training.batch_size, epochs=epochs, verbose=0
        )
        out.append(model.predict(x, batch_size=2048, verbose=0))
    return out


def run_membership(
    base: RunConfig,
    epsilons: list[float],
    seed: int,
    clip_norm: float,
    references: int,
    reference_epochs: int,
    work: Path,
) -> tuple[list[MembershipRow], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Train one federation per epsilon (same seed), attack each final model."""
    from fedpipe.data import datasets
    from fedpipe.simulation.runner import simulate

    cfg0 = base.replace({"seed": seed})
    data = datasets.load(cfg0)
    rng = np.random.default_rng([seed, 0x3E3])
    held = rng.permutation(len(data.y_heldout))
    non_members, attacker = held[: len(held) // 2], held[len(held) // 2 :]
    members = rng.choice(len(data.y_train), len(non_members), replace=False)
    x = np.concatenate([data.x_train[members], data.x_heldout[non_members]])
    y = np.concatenate([data.y_train[members], data.y_heldout[non_members]])
    is_member = np.concatenate([np.ones(len(members), bool), np.zeros(len(non_members), bool)])
    refs = reference_probabilities(
        cfg0, data.x_heldout[attacker], data.y_heldout[attacker], x, references, reference_epochs
    )
    rows, curves = [], {}
    for eps in epsilons:
        if math.isinf(eps):
            cfg, z = cfg0, None
        else:
            cfg = cfg0.replace({"aggregation.dp.clip_norm": clip_norm})
            z = noise_for_epsilon(cfg, eps)
            cfg = cfg.replace({"aggregation.dp.noise_multiplier": z})
        workdir = work / f"eps-{eps:g}-seed{seed}"
        shutil.rmtree(workdir, ignore_errors=True)
        result = simulate(cfg, workdir, run_name=f"{NAME} eps={eps:g} seed {seed}", register=False)
        probs = _probabilities(cfg, result.model, x)
        loss_score = membership.loss_scores(probs, y)
        calibrated = membership.calibrated_scores(probs, refs, y)
        by_loss = membership.evaluate(loss_score, is_member)
        by_calibration = membership.evaluate(calibrated, is_member)
        rows.append(
            MembershipRow(
                eps,
                z,
                seed,
                result.accuracy[-1],
                by_loss.auc,
                by_loss.tpr_at_fpr,
                by_calibration.auc,
                by_calibration.tpr_at_fpr,
            )
        )
        curves[f"eps={eps:g} loss"] = membership.roc(loss_score, is_member)
        curves[f"eps={eps:g} calibrated"] = membership.roc(calibrated, is_member)
    return rows, curves


def inversion_markdown(rows: list[InversionRow]) -> str:
    lines = [
        "| what the attacker sees | images | PSNR dB | SSIM | labels recovered "
        "| noise PSNR dB | noise SSIM | 1 - cos at end |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label in dict.fromkeys(r.setting for r in rows):
        group = [r for r in rows if r.setting == label]
        lines.append(
            f"| {label} | {group[0].images} | {mean_std([r.psnr for r in group])} | "
            f"{mean_std([r.ssim for r in group])} | "
            f"{mean_std([r.label_recovery for r in group])} | "
            f"{mean_std([r.baseline_psnr for r in group])} | "
            f"{mean_std([r.baseline_ssim for r in group])} | "
            f"{mean_std([r.final_loss for r in group])} |"
        )
    return "\n".join(lines) + "\n"


def membership_markdown(rows: list[MembershipRow]) -> str:
    lines = [
        "| epsilon | noise multiplier | accuracy | loss-threshold AUC | TPR @ 1% FPR "
        "| calibrated AUC | TPR @ 1% FPR |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for eps in dict.fromkeys(r.epsilon for r in rows):
        g = [r for r in rows if r.epsilon == eps]
        z = "-" if g[0].noise_multiplier is None else f"{g[0].noise_multiplier:.3f}"
        lines.append(
            f"| {'inf (no DP)' if math.isinf(eps) else f'{eps:g}'} | {z} | "
            f"{mean_std([r.accuracy for r in g])} | {mean_std([r.loss_auc for r in g])} | "
            f"{mean_std([r.loss_tpr for r in g])} | {mean_std([r.calibrated_auc for r in g])} | "
            f"{mean_std([r.calibrated_tpr for r in g])} |"
        )
    return "\n".join(lines) + "\n"


def reconstruction_figure(samples: list[tuple[str, np.ndarray, np.ndarray]], shape) -> Figure:
    """Per setting, up to 8 real images (top) above their matched reconstructions."""
    from matplotlib.figure import Figure

    cols = 8
    fig = Figure(figsize=(cols * 1.0, len(samples) * 2.3), layout="constrained")
    subfigs = fig.subfigures(len(samples), 1) if len(samples) > 1 else [fig]
    for sub, (label, real, rebuilt) in zip(subfigs, samples, strict=True):
        sub.suptitle(label, fontsize=9)
        axes = sub.subplots(2, cols)
        for j in range(cols):
            for row, images in enumerate((real, rebuilt)):
                ax = axes[row, j]
                ax.axis("off")
                if j < len(images):
                    ax.imshow(images[j].reshape(shape), cmap="gray", vmin=0, vmax=1)
    return fig


def roc_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.5), layout="constrained")
    for ax, kind in zip(fig.subplots(1, 2), ("loss", "calibrated"), strict=True):
        for name, (fpr, tpr) in curves.items():
            if name.endswith(kind):
                ax.plot(np.maximum(fpr, 1e-4), np.maximum(tpr, 1e-4), label=name.split()[0])
        ax.plot([1e-4, 1], [1e-4, 1], "--", color="gray")
        ax.set(xscale="log", yscale="log", xlabel="FPR", ylabel="TPR", title=f"{kind} attack")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def run(
    inversion_base: RunConfig,
    membership_base: RunConfig,
    *,
    seeds: list[int],
    epsilons: list[float],
    iterations: int,
    clip_norm: float,
    references: int,
    reference_epochs: int,
    output: Path,
    parts: tuple[str, ...] = ("inversion", "membership"),
) -> str:
    """Run the attacks over every seed, write rows.json, table.md and the plots, and log
    them to one MLflow run; returns the markdown table."""
    output.mkdir(parents=True, exist_ok=True)
    inv_rows: list[InversionRow] = []
    mia_rows: list[MembershipRow] = []
    samples, curves, files = [], {}, []
    for seed in seeds:
        if "inversion" in parts:
            for setting in INVERSION_SETTINGS:
                row, real, rebuilt = run_inversion(inversion_base, setting, seed, iterations)
                inv_rows.append(row)
                print(f"inversion {row}", flush=True)
                if seed == seeds[0]:
                    samples.append((setting.label, real[:8], rebuilt[:8]))
        if "membership" in parts:
            rows, seed_curves = run_membership(
                membership_base,
                epsilons,
                seed,
                clip_norm,
                references,
                reference_epochs,
                output / "simulations",
            )
            mia_rows += rows
            print(f"membership {rows}", flush=True)
            if seed == seeds[0]:
                curves = seed_curves
    text = f"# Privacy attacks, seeds {', '.join(map(str, seeds))}\n\n"
    metrics: dict[str, float] = {}
    if inv_rows:
        text += "## Update inversion (MNIST, 2NN MLP at its initial weights)\n\n"
        text += inversion_markdown(inv_rows) + "\n"
        fig = reconstruction_figure(samples, (28, 28))
        fig.savefig(output / "reconstructions.png", dpi=100)
        files.append(output / "reconstructions.png")
        for s in INVERSION_SETTINGS:
            group = [r for r in inv_rows if r.setting == s.label]
            key = f"{s.view}_B{s.batch_size}_steps{s.steps}"
            metrics[f"inversion_psnr/{key}"] = statistics.fmean(r.psnr for r in group)
            metrics[f"inversion_ssim/{key}"] = statistics.fmean(r.ssim for r in group)
    if mia_rows:
        text += "## Membership inference (final federated model)\n\n"
        text += membership_markdown(mia_rows) + "\n"
        roc_figure(curves).savefig(output / "membership_roc.png", dpi=100)
        files.append(output / "membership_roc.png")
        for eps in epsilons:
            group = [r for r in mia_rows if r.epsilon == eps]
            key = "inf" if math.isinf(eps) else f"{eps:g}"
            metrics[f"mia_loss_auc/eps_{key}"] = statistics.fmean(r.loss_auc for r in group)
            metrics[f"mia_calibrated_auc/eps_{key}"] = statistics.fmean(
                r.calibrated_auc for r in group
            )
            metrics[f"accuracy/eps_{key}"] = statistics.fmean(r.accuracy for r in group)
    (output / "table.md").write_text(text)
    (output / "rows.json").write_text(
        json.dumps(
            {
                "inversion": [dataclasses.asdict(r) for r in inv_rows],
                "membership": [dataclasses.asdict(r) for r in mia_rows],
            },
            indent=1,
            default=str,
        )
    )
    files += [output / "table.md", output / "rows.json"]
    tracking.log_experiment(
        membership_base,
        NAME,
        files,
        metrics=metrics,
        params={"seeds": seeds, "iterations": iterations, "references": references},
    )
    return text
