# The federated agent (and its coordinator, manifests/base/coordinator.yaml): the runtime
# image's venv and user, started as `fedpipe agent`.
#
# Build the runtime image first, then from the repo root:
#   docker build -f images/agent.Dockerfile \
#       --build-arg RUNTIME_IMAGE=REG/fedpipe-runtime:0.1.0 -t REG/fedpipe-agent:0.1.0 .
# The coordinator runs the same image with `fedpipe coordinator ...` as its command.
ARG RUNTIME_IMAGE=fedpipe-runtime:0.1.0
FROM ${RUNTIME_IMAGE}
USER 10001:10001
WORKDIR /home/fedpipe
ENTRYPOINT ["fedpipe", "agent"]
