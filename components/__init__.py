"""KFP components of fedpipe: one folder per stage, each a thin wrapper of one function in
fedpipe.stages. Their bodies run in the runtime image (images/runtime.Dockerfile)."""

# The image every component runs in; `fedpipe compile --image` sets another.
RUNTIME_IMAGE = "fedpipe-runtime:0.1.0"
