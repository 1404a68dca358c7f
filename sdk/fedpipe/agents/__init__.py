"""Client agents: each data owner runs an agent next to its data that dials out over
mutual-TLS gRPC to a coordinator; the pipeline's client-side stages send their work
through the coordinator instead of reading a partition.

provisioning (certificates), identity (an agent's SecAgg signing key, bound into its
certificate), transport (TLS credentials, envelopes, chunked payloads), coordinator (the
service), agent (the data owner's process), client_tasks (what an agent runs for a task),
remote_clients (the pipeline's side: the agents' client runtime), data_folder (an agent's
data).
"""
