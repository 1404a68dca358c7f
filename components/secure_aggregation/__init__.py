"""The secure-aggregation protocol's steps around local train and aggregate, one folder a
step (client side: advertise, share_keys, unmask; server side: relay, request)."""
