"""The DP layer of the aggregation chain driven directly: the central path on a list of
updates, and one client's part under secure aggregation (shared by the privacy tests)."""

import numpy as np

from fedpipe.aggregation.chain import build_chain
from fedpipe.aggregation.layer import ClientContext, RoundContext
from fedpipe.artifacts.wire import WeightsSpec
from fedpipe.privacy.dp_fedavg import DpFedAvg


def dp_layer(cfg) -> DpFedAvg:
    (layer,) = [x for x in build_chain(cfg).layers if isinstance(x, DpFedAvg)]
    return layer


def private_mean(cfg, updates, round_number, state):
    """The plain (central) DP path: (noised mean delta, clipped count, new state)."""
    chain = build_chain(cfg)
    size = updates[0].vector.size
    spec = WeightsSpec(("w",), ((size,),))
    rnd = RoundContext(round_number, [u.client_id for u in updates], {}, state, spec, False)
    _, new_state, delta, _ = chain.aggregate_plain(updates, rnd, np.zeros(size, np.float32))
    (layer,) = [x for x in chain.layers if isinstance(x, DpFedAvg)]
    return delta, layer._clipped, new_state


def secure_client_part(cfg, client_id, round_number, delta):
    """What a client adds before masking under DP: its clipped update plus its noise share."""
    ctx = ClientContext(client_id, round_number, 10, None, {}, secure=True)
    return dp_layer(cfg).client(delta, ctx)
