"""Webhooks: each user's webhooks in the read-model database, and the deliverer that POSTs
their events, signed, in position order, from a tracked position (run by the projector role)."""
