# The runtime image every fedpipe component runs in (components/__init__.py RUNTIME_IMAGE).
# It holds the pinned dependencies (kfp, TensorFlow, MLflow, ...) and fedpipe itself,
# including fedpipe.components and fedpipe.pipelines.
#
# Build from the repo root (the build context must be the repo root):
#   docker build -f images/runtime.Dockerfile -t fedpipe-runtime:0.1.0 .
# Then tag and push it to a registry your cluster can pull from, and compile with
#   fedpipe compile --image REG/fedpipe-runtime:0.1.0 ...
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2

WORKDIR /opt/fedpipe

# Dependencies first, so the layer is reused while only fedpipe's code changes.
COPY requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock

# README.md is read by setup.cfg (long_description = file: README.md).
COPY setup.cfg pyproject.toml README.md ./
COPY sdk/ sdk/
COPY components/ components/
COPY pipelines/ pipelines/
RUN pip install --no-cache-dir --no-deps .
