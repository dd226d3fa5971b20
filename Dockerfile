# One image for both clipft processes: `clipft api` (the default command) and `clipft worker`.
# docker-compose.yml runs it twice, the worker with a GPU reservation.
#
#   docker build -t clipft:latest .
#   docker build -t clipft:latest --build-arg TORCH_CUDA=cu126 .   # host driver older than 580
#
# What differs between build machines comes in as build arguments, so that every machine builds
# this same file (docs/deployment.md, "Building the image"):
#   BASE_IMAGE         any image with Python 3.11 and its venv module (Debian 12's python3 and
#                      python3-venv will do, for a machine that cannot pull from Docker Hub)
#   TORCH_INDEX_URL    where torch and torchvision come from: PyTorch's index of the TORCH_CUDA
#                      build by default; PyPI's own torch 2.14.1 is the CUDA 13.0 build too
#   PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_TRUSTED_HOST
#                      pip's index for everything else (a mirror or a proxy); unset: PyPI
ARG BASE_IMAGE=python:3.11.14-slim-trixie
FROM ${BASE_IMAGE}

# The CUDA flavour of the PyTorch wheels. torch 2.14 is published for cu126, cu130 and cu132;
# cu130 runs on Turing through Blackwell GPUs and needs an NVIDIA driver >= 580 on the host,
# cu126 runs on older drivers (>= 525) and older GPUs (Maxwell to Hopper, no Blackwell).
ARG TORCH_CUDA=cu130
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_CUDA}
# pip reads these from the environment of the RUN steps. Build arguments are not set in the
# containers' environment, but `docker history` shows their values: put no credentials in
# them.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    CLIPFT_DATA_DIR=/data \
    HF_HOME=/hf-cache

# A fixed uid/gid, so a bind-mounted data dir can be chowned to it (10001:10001). Named volumes
# mounted at /data and /hf-cache start out owned by this user, because the image's folders are.
# clipft and its dependencies go into a virtual environment: the same on any base image, and
# outside a Debian python3 that refuses system-wide pip installs.
RUN groupadd --system --gid 10001 clipft \
    && useradd --system --uid 10001 --gid clipft --create-home --home-dir /home/clipft \
        --shell /usr/sbin/nologin clipft \
    && mkdir -p /data /hf-cache \
    && chown clipft:clipft /data /hf-cache \
    && python3 -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "clipft needs Python 3.11 in BASE_IMAGE")' \
    && python3 -m venv /opt/venv

WORKDIR /opt/clipft

# torch/torchvision first, in their own layer (several GB, rarely changes). The versions are
# the ones pyproject.toml pins; `pip install .` below then keeps them, since 2.14.1+cu130
# satisfies ==2.14.1.
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" \
        torch==2.14.1 torchvision==0.29.1

COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY worker ./worker
COPY migrations ./migrations
# Install the project, then check that the console command exists and imports.
RUN pip install --no-cache-dir . \
    && rm -rf build ./*.egg-info \
    && clipft --help > /dev/null
COPY deploy/healthcheck.py ./healthcheck.py

USER 10001:10001

EXPOSE 8000

# One check for either process, `clipft health`'s probe without the CLI's imports: a container
# whose worker touches its liveness file is a worker (healthy while the file is fresh and the
# broker answers), else an api (its /health, which answers 503 while the database or the broker
# is down). deploy/healthcheck.py and app/health/probe.py say how.
HEALTHCHECK --interval=30s --timeout=20s --start-period=120s --retries=3 \
    CMD ["python", "/opt/clipft/healthcheck.py"]

CMD ["clipft", "api", "--host", "0.0.0.0", "--port", "8000"]
