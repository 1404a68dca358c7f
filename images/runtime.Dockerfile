# The runtime image every fedpipe component runs in (components/__init__.py RUNTIME_IMAGE),
# and the MLflow tracking server of manifests/: the pinned requirements.lock (kfp,
# kfp-kubernetes, TensorFlow CPU, MLflow, boto3, psycopg, google-cloud-storage, ...) and
# fedpipe itself, including fedpipe.components and fedpipe.pipelines.
#
# Build from the repo root (the build context must be the repo root):
#   docker build -f images/runtime.Dockerfile -t REG/fedpipe-runtime:0.1.0 .
# Two stages: the build stage makes a virtualenv from the lock; the final stage copies
# only that venv onto the slim base (no pip cache, no build files) and runs as a non-root
# user.
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, so the layer is reused while only fedpipe's code changes.
COPY requirements.lock ./
RUN pip install -r requirements.lock && pip check
# README.md is read by setup.cfg (long_description = file: README.md).
COPY setup.cfg pyproject.toml README.md ./
COPY sdk/ sdk/
COPY components/ components/
COPY pipelines/ pipelines/
RUN pip install --no-deps . \
    && python -c "import fedpipe.pipelines.federated_training, kfp.kubernetes, psycopg, boto3"
# TensorFlow's shared objects ship their full symbol tables (913 MiB of .so, 675 MiB
# stripped); the dynamic symbols stay, so only C++ crash traces lose names. Other wheels'
# libraries are left alone (auditwheel-patched ELF files can break under strip).
RUN apt-get update \
    && apt-get install -y --no-install-recommends binutils=2.40-2 \
    && find /opt/venv -path "*/site-packages/tensorflow/*" -name "*.so*" -type f \
        -exec strip --strip-unneeded {} + \
    && python -c "import tensorflow as tf; tf.keras.layers.Dense(1)(tf.zeros((1, 2)))"

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    HOME=/home/fedpipe \
    FEDPIPE_CACHE_DIR=/home/fedpipe/.cache/fedpipe/data
RUN groupadd --gid 10001 fedpipe \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/fedpipe fedpipe
COPY --from=build /opt/venv /opt/venv
WORKDIR /home/fedpipe
USER 10001:10001
CMD ["fedpipe", "--help"]
