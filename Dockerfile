# The image for the Ray head, the Ray workers and the MLflow server: the orchestrator installed on a
# Ray base image, with the CUDA build of torch. Build and push instructions: docs/kubernetes.md.
#
#   docker build -t REGISTRY/orchestrator:0.1.0 .
#
# RAY_VERSION must match `rayVersion` in k8s/base/raycluster.yaml and RAY_VERSION in
# orchestrator/kubernetes/rayjob.py (a test checks all three): KubeRay configures the pods for that version.
ARG RAY_VERSION=2.60.0
ARG PYTHON_TAG=py311
# The -cpu variant is the plain Ubuntu image. The GPU build of torch brings its own CUDA runtime
# (pip wheels), and the NVIDIA container runtime mounts the driver into GPU pods, so a CUDA base image
# would only add a second, unused CUDA toolkit.
FROM rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-cpu

# 2.13.0 is the version `make install` pins on the dev machines. PyPI's Linux x86_64 wheel of it is
# the CUDA 13 build (it needs NVIDIA driver >= 580 on the GPU nodes); for older drivers pass e.g.
# --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126, and for a small CPU-only
# image (kind, minikube) --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://pypi.org/simple

# The base image runs as the non-root user `ray` (uid 1000, gid 100) with its Python in
# /home/ray/anaconda3; everything below installs there as that user.
USER ray
WORKDIR /home/ray/orchestrator
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

# torch first, in its own layer: it is by far the largest and changes least often. Installing it
# before the project means the project's `torch>=2.4` requirement installs nothing more.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

# What the MLflow server needs on top of mlflow itself: the PostgreSQL driver for
# --backend-store-uri postgresql://... and boto3 for the S3 (MinIO) artifact store.
RUN pip install "psycopg2-binary>=2.9,<3" "boto3>=1.34,<2"

# The project itself, a regular (non-editable) install: Hydra discovers our launcher plugin from
# it. Only the files the package needs are copied (see .dockerignore), so edits to tests or docs
# do not invalidate this layer.
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users orchestrator ./orchestrator
COPY --chown=ray:users launchers ./launchers
COPY --chown=ray:users conf ./conf
RUN pip install . \
    && python -c "import orchestrator, torch, mlflow, psycopg2, boto3; print('torch', torch.__version__)" \
    && orchestrator --help

# Jobs start in the home directory (writable by `ray`): Hydra writes its outputs/ folder into the
# working directory.
WORKDIR /home/ray
