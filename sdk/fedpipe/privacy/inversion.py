"""Update inversion: what an honest-but-curious server can rebuild from a client's update.

The attack is "Inverting Gradients" (Geiping et al. 2020) with iDLG's label recovery (Zhao
et al. 2020), on the dense models fedpipe trains (logistic regression, the 2NN MLP):

1. Labels from the last layer's bias: its gradient is mean_i(p_i - onehot(y_i)), so the
   classes with the most negative entries are the batch's labels. With one example the
   single negative entry is the label (exact); with B examples the count of class c is
   estimated as B * (pbar_c - g_c), pbar being the model's mean prediction on noise.
2. Images by optimisation: dummy images in [0, 1] are trained so that the update they
   would produce (the client's local SGD unrolled with the known learning rate, batch size
   and step count) points the same way as the observed update: minimise
   1 - cos(simulated delta, observed delta) + tv * total variation.

The same code attacks the sum a server sees under secure aggregation: the cohort's mean
update after one local step is exactly the update of one step on the union of the
cohort's batches, so the attacker rebuilds cohort x B images and scores the best match
of each real image.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment


@dataclasses.dataclass(frozen=True)
class Observed:
    """What the server knows about one update: the update itself, the global weights it
    started from (as the model's list of tensors), and the public training settings."""

    delta: list[np.ndarray]  # new - global, per tensor
    weights: list[np.ndarray]  # global weights, per tensor (kernel, bias, kernel, bias, ...)
    num_examples: int  # sent with every FedAvg update (the summed weight under SecAgg)
    batch_size: int
    steps: int  # local SGD steps the update is made of
    learning_rate: float


@dataclasses.dataclass(frozen=True)
class Reconstruction:
    images: np.ndarray  # (num_examples, features) in [0, 1]
    labels: np.ndarray  # recovered labels, one per image
    final_loss: float  # 1 - cosine similarity at the end


def forward(weights, x):
    """Logits of a stack of Dense layers (ReLU between them), from a flat weight list: the
    function models.build makes for logistic_regression and mlp."""
    import tensorflow as tf

    h = x
    pairs = list(zip(weights[0::2], weights[1::2], strict=True))
    for i, (kernel, bias) in enumerate(pairs):
        h = tf.matmul(h, kernel) + bias
        if i < len(pairs) - 1:
            h = tf.nn.relu(h)
    return h


def recover_labels(observed: Observed, num_classes: int, seed: int = 0) -> np.ndarray:
    """iDLG for one example; for more, per-class counts from the bias gradient's mean."""
    import tensorflow as tf

    gradient = -observed.delta[-1] / (observed.learning_rate * observed.steps)
    n = observed.num_examples
    if n == 1:
        return np.array([int(np.argmin(gradient))])
    rng = np.random.default_rng(seed)
    noise = rng.random((256, observed.weights[0].shape[0])).astype(np.float32)
    weights = [tf.constant(w) for w in observed.weights]
    pbar = tf.reduce_mean(tf.nn.softmax(forward(weights, noise)), axis=0).numpy()
    estimate = np.maximum(n * (pbar - gradient), 0.0)
    counts = np.floor(estimate).astype(int)
    remainder = estimate - counts
    while counts.sum() < n:  # largest remainders first, until the batch is full
        c = int(np.argmax(remainder))
        counts[c] += 1
        remainder[c] = -np.inf if remainder[c] < 0 else remainder[c] - 1
    while counts.sum() > n:
        counts[int(np.argmax(counts))] -= 1
    return np.repeat(np.arange(num_classes), counts)


def reconstruct(
    observed: Observed,
    labels: np.ndarray,
    *,
    iterations: int = 300,
    learning_rate: float = 0.1,
    tv: float = 1e-4,
    image_shape: tuple[int, int] | None = None,
    seed: int = 0,
) -> Reconstruction:
    """Optimise dummy images so that local SGD on them reproduces the observed update's
    direction (the attacker's own randomness, seeded: the experiment must repeat)."""
    import tensorflow as tf

    n, features = observed.num_examples, observed.weights[0].shape[0]
    rng = np.random.default_rng(seed)
    dummy = tf.Variable(rng.random((n, features)).astype(np.float32))
    y = tf.constant(labels.astype(np.int64))
    start = [tf.constant(w) for w in observed.weights]
    target = tf.concat([tf.reshape(tf.constant(d), [-1]) for d in observed.delta], 0)
    lr = tf.constant(observed.learning_rate, tf.float32)
    batches = [
        (s % n, min(s % n + observed.batch_size, n))
        for s in range(0, observed.steps * observed.batch_size, observed.batch_size)
    ]
    optimizer = tf.keras.optimizers.Adam(learning_rate)

    def simulated_delta(x):
        weights = list(start)
        for lo, hi in batches:
            with tf.GradientTape() as inner:
                inner.watch(weights)
                loss = tf.reduce_mean(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(
                        y[lo:hi], forward(weights, x[lo:hi])
                    )
                )
            grads = inner.gradient(loss, weights)
            weights = [w - lr * g for w, g in zip(weights, grads, strict=True)]
        return tf.concat([tf.reshape(w - s, [-1]) for w, s in zip(weights, start, strict=True)], 0)

    def variation(x):
        if image_shape is None:
            return tf.constant(0.0)
        img = tf.reshape(x, [-1, *image_shape])
        return tf.reduce_mean(tf.abs(img[:, 1:, :] - img[:, :-1, :])) + tf.reduce_mean(
            tf.abs(img[:, :, 1:] - img[:, :, :-1])
        )

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            sim = simulated_delta(dummy)
            cosine = tf.reduce_sum(sim * target) / (tf.norm(sim) * tf.norm(target) + 1e-12)
            objective = 1.0 - cosine + tv * variation(dummy)
        optimizer.apply_gradients([(tape.gradient(objective, dummy), dummy)])
        dummy.assign(tf.clip_by_value(dummy, 0.0, 1.0))
        return 1.0 - cosine

    loss = 1.0
    for _ in range(iterations):
        loss = float(step())
    return Reconstruction(dummy.numpy(), labels, loss)


def psnr(reconstructed: np.ndarray, real: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of images in [0, 1]."""
    mse = float(np.mean((reconstructed - real) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def ssim(reconstructed: np.ndarray, real: np.ndarray, image_shape: tuple[int, int]) -> float:
    """Structural similarity (Wang et al. 2004) of two images in [0, 1]: the mean over a
    uniform window (7x7, or the image's side if smaller), as scikit-image computes it."""
    a = reconstructed.reshape(image_shape).astype(np.float64)
    b = real.reshape(image_shape).astype(np.float64)
    win = min(7, *image_shape)
    if win % 2 == 0:
        win -= 1
    c1, c2 = 0.01**2, 0.03**2
    npts = win * win
    cov_norm = npts / (npts - 1)  # sample covariance, as scikit-image's default

    def mean(x):
        return ndimage.uniform_filter(x, size=win)

    ma, mb = mean(a), mean(b)
    va = cov_norm * (mean(a * a) - ma * ma)
    vb = cov_norm * (mean(b * b) - mb * mb)
    cab = cov_norm * (mean(a * b) - ma * mb)
    s = ((2 * ma * mb + c1) * (2 * cab + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
    pad = (win - 1) // 2
    return float(s[pad : s.shape[0] - pad, pad : s.shape[1] - pad].mean())


@dataclasses.dataclass(frozen=True)
class Score:
    psnr: float  # mean over the real images of the PSNR of their matched reconstruction
    ssim: float
    label_recovery: float  # share of the real labels recovered (as a multiset)
    matched: np.ndarray  # for each real image, the index of its reconstruction


def score(
    reconstruction: Reconstruction,
    real_images: np.ndarray,
    real_labels: np.ndarray,
    image_shape: tuple[int, int],
) -> Score:
    """Match each real image to one reconstruction (Hungarian on the squared error: a
    batch's order is unknown) and score the matches; labels as a multiset overlap."""
    errors = ((real_images[:, None, :] - reconstruction.images[None, :, :]) ** 2).mean(axis=2)
    rows, cols = linear_sum_assignment(errors)
    psnrs = [
        psnr(reconstruction.images[c], real_images[r]) for r, c in zip(rows, cols, strict=True)
    ]
    ssims = [
        ssim(reconstruction.images[c], real_images[r], image_shape)
        for r, c in zip(rows, cols, strict=True)
    ]
    classes = max(int(real_labels.max()), int(reconstruction.labels.max(initial=0))) + 1
    overlap = np.minimum(
        np.bincount(real_labels, minlength=classes),
        np.bincount(reconstruction.labels, minlength=classes),
    ).sum()
    matched = np.empty(len(rows), int)
    matched[rows] = cols
    return Score(
        float(np.mean(psnrs)),
        float(np.mean(ssims)),
        float(overlap / len(real_labels)),
        matched,
    )


def random_baseline(
    real_images: np.ndarray, image_shape: tuple[int, int], seed: int = 0
) -> tuple[float, float]:
    """PSNR and SSIM of uniform-noise images against the real ones: what guessing reaches."""
    noise = np.random.default_rng(seed).random(real_images.shape)
    return (
        float(np.mean([psnr(n, r) for n, r in zip(noise, real_images, strict=True)])),
        float(np.mean([ssim(n, r, image_shape) for n, r in zip(noise, real_images, strict=True)])),
    )
