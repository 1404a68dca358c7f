"""The stages of a federated run, as plain functions over files.

Each KFP component calls exactly one of these, and the in-process simulation calls the
same ones in the same order, so the pipeline and the simulation cannot drift apart.
"""

from fedpipe.stages.aggregate import aggregate
from fedpipe.stages.broadcast import broadcast
from fedpipe.stages.evaluate import evaluate
from fedpipe.stages.initialize import continue_training, initialize
from fedpipe.stages.local_train import local_train
from fedpipe.stages.register import register
from fedpipe.stages.secure_aggregation import (
    advertise_keys,
    confirm_survivors,
    relay_messages,
    request_unmasking,
    share_keys,
    unmask_response,
)
from fedpipe.stages.select import select

__all__ = ["aggregate", "broadcast", "evaluate", "initialize", "local_train", "register", "select"]
__all__ += ["advertise_keys", "relay_messages", "request_unmasking", "share_keys"]
__all__ += ["confirm_survivors", "continue_training", "unmask_response"]
