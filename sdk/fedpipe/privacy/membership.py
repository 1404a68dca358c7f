"""Membership inference against a trained model: was this example in the training data?

Two attacks, both black-box on the model's predicted probabilities:

- Loss threshold (Yeom et al. 2018): members have lower loss; the score is -loss.
- Calibrated by reference models (offline LiRA, Carlini et al. 2022; difficulty calibration,
  Watson et al. 2022): the attacker trains reference models on data from the same
  population that does not contain the candidates, fits a Gaussian to each candidate's
  logit-scaled confidence phi = log(p_y / (1 - p_y)) over the references, and scores the
  target model's phi by how far it lies above that Gaussian. Easy examples have high
  confidence whether seen or not; calibration removes that, which is what makes the
  low-false-positive regime work.

Both report ROC AUC and TPR at a fixed low FPR (1% by default), as Carlini et al. argue an
attack should be judged.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


@dataclasses.dataclass(frozen=True)
class AttackResult:
    auc: float
    tpr_at_fpr: float  # TPR at the largest threshold whose FPR <= fpr
    fpr: float


def true_class_probability(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return probs[np.arange(len(labels)), labels]


def loss_scores(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Yeom et al.'s score: the negative cross-entropy of each example."""
    return np.log(np.clip(true_class_probability(probs, labels), 1e-12, 1.0))


def logit_confidence(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """phi = log p_y - log(1 - p_y), computed stably: roughly Gaussian over models."""
    p = np.clip(true_class_probability(probs, labels).astype(np.float64), 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def calibrated_scores(
    target_probs: np.ndarray, reference_probs: list[np.ndarray], labels: np.ndarray
) -> np.ndarray:
    """Offline LiRA: the target's phi standardised by the references' (OUT) phi."""
    target = logit_confidence(target_probs, labels)
    refs = np.stack([logit_confidence(p, labels) for p in reference_probs])
    mean = refs.mean(axis=0)
    # One global variance is more stable than per-example ones with few references.
    std = refs.std(axis=0).mean() if len(reference_probs) > 1 else 1.0
    return (target - mean) / (std + 1e-12)


def evaluate(scores: np.ndarray, is_member: np.ndarray, fpr: float = 0.01) -> AttackResult:
    """ROC AUC and TPR at `fpr` of a membership score (higher = more likely a member)."""
    is_member = np.asarray(is_member, dtype=bool)
    auc = float(roc_auc_score(is_member, scores))
    fprs, tprs, _ = roc_curve(is_member, scores)
    return AttackResult(auc, float(tprs[fprs <= fpr].max(initial=0.0)), fpr)


def roc(scores: np.ndarray, is_member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) points of the attack's ROC curve, for plotting."""
    fprs, tprs, _ = roc_curve(np.asarray(is_member, dtype=bool), scores)
    return fprs, tprs
