# One image for the API, the workers and the migration step (docker-compose.yml picks the command).
# It has the server and worker extras, and the onnx one for jobs with "export": ["onnx"].
FROM python:3.11-slim

# PyPI's torch 2.13.0 for Linux x86_64 is the CUDA 13.0 build (it needs an NVIDIA driver >= 580).
# For an older driver, pass a CUDA index of download.pytorch.org that carries this version, e.g.
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
# (cu124 stopped at torch 2.6.0), or https://download.pytorch.org/whl/cpu for a CPU-only image.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://pypi.org/simple

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# bubblewrap: the training sandbox's bwrap (worker/sandbox/), which a non-root user runs through
# unprivileged user namespaces (the compose files' worker services allow them, docs/deploy.md).
# hadolint ignore=DL3008  # Debian's stable package, security updates included
RUN apt-get update \
    && apt-get install --yes --no-install-recommends bubblewrap \
    && rm -rf /var/lib/apt/lists/*

# Everything runs as this user, never root: a job runs its teacher's code. A fixed uid (and gid),
# so the storage volume and an NFS share are owned alike on every host; the compose files name it.
RUN groupadd --gid 1000 distill \
    && useradd --create-home --uid 1000 --gid 1000 distill \
    && mkdir /data && chown distill:distill /data

WORKDIR /app

# torch first, in its own layer and command, so the project's install keeps this build.
RUN pip install --index-url "$TORCH_INDEX_URL" "torch==$TORCH_VERSION"

COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY worker ./worker
COPY distillery ./distillery
COPY jobspec ./jobspec
COPY file_rules ./file_rules
COPY migrations ./migrations
# The API (server) and the worker (worker, onnx) from one image.
# hadolint ignore=DL3013  # the project itself; its pins are in pyproject.toml
RUN pip install ".[server,worker,onnx]"

USER 1000:1000
ENV DISTILL_STORAGE_DIR=/data
EXPOSE 8000
CMD ["distill", "serve", "--host", "0.0.0.0", "--port", "8000"]
