"""Validation of individual updates: encoding, example count, dtype, shape, checksum and
finite values, each rejection naming the client and the reason."""

from __future__ import annotations

from fedpipe.aggregation.layer import Layer, RoundContext, Screened
from fedpipe.aggregation.outcome import Rejection
from fedpipe.artifacts import wire
from fedpipe.artifacts.updates import ClientUpdate


class UpdateValidation(Layer):
    """Rejects what cannot be aggregated; the round goes on without it."""

    name = "validate"
    streamable = True

    def on_updates(self, updates: list[ClientUpdate], rnd: RoundContext) -> Screened:
        screened = Screened([])
        for u in updates:
            try:
                if u.encoding != "float32":
                    raise wire.UpdateRejected(
                        u.client_id, f"encoding {u.encoding!r} needs secure aggregation"
                    )
                if u.num_examples <= 0:
                    raise wire.UpdateRejected(
                        u.client_id, f"example count {u.num_examples} must be > 0"
                    )
                wire.validate_update(u.client_id, u.vector, rnd.spec, u.checksum)
            except wire.UpdateRejected as e:
                screened.rejected.append(Rejection(e.client_id, e.reason))
            else:
                screened.kept.append(u)
        return screened
