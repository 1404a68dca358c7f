"""A client's update is the same bits whatever cores its process may use: training runs
one TensorFlow intra-op thread (fedpipe.training.trainer), so an agent on a laptop, a pod
with two CPUs and a simulation thread compute the same update from the same plan."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MNIST_DIR

REPO = Path(__file__).resolve().parents[1]

# One client's local training on MNIST's reference model, in a fresh process whose CPU
# affinity is argv[1] (comma-separated cores); prints the SHA-256 of its delta.
_TRAIN_ONE_CLIENT = """
import hashlib, os, sys
os.sched_setaffinity(0, {int(c) for c in sys.argv[1].split(",")})
from fedpipe import config
from fedpipe.training import trainer
cfg = config.load(sys.argv[2]).replace({"data.data_dir": sys.argv[3]})
model = trainer.for_config(cfg)
x, y = model.data.x_train[:800], model.data.y_train[:800]
result = model.train(model.initial_weights(), x, y, epochs=2, batch_size=32,
                     learning_rate=0.1, mu=0.0, seed=[0, 1, 0])
print(hashlib.sha256(result.delta.tobytes()).hexdigest())
"""


def _train(cores: str, env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-c", _TRAIN_ONE_CLIENT, cores, str(REPO / "configs" / "mnist.yaml")]
        + [str(MNIST_DIR)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to compare")
def test_a_clients_update_does_not_depend_on_the_cores_it_may_use():
    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": ""}  # unset, as far as TensorFlow knows
    one_core, two_cores = _train("0", env), _train("0,1", env)
    assert len(one_core) == len(hashlib.sha256().hexdigest())
    assert one_core == two_cores
