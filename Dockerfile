# One image for both clipft processes: `clipft api` (the default command) and `clipft worker`.
# docker-compose.yml runs it twice, the worker with a GPU reservation.
#
#   docker build -t clipft:latest .
#   docker build -t clipft:latest --build-arg TORCH_CUDA=cu126 .   # host driver older than 580
FROM python:3.11.14-slim-trixie

# The CUDA flavour of the PyTorch wheels. torch 2.14 is published for cu126, cu130 and cu132;
# cu130 runs on Turing through Blackwell GPUs and needs an NVIDIA driver >= 580 on the host,
# cu126 runs on older drivers (>= 525) and older GPUs (Maxwell to Hopper, no Blackwell).
ARG TORCH_CUDA=cu130

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CLIPFT_DATA_DIR=/data \
    HF_HOME=/hf-cache

# A fixed uid/gid, so a bind-mounted data dir can be chowned to it (10001:10001). Named volumes
# mounted at /data and /hf-cache start out owned by this user, because the image's folders are.
RUN groupadd --system --gid 10001 clipft \
    && useradd --system --uid 10001 --gid clipft --create-home --home-dir /home/clipft \
        --shell /usr/sbin/nologin clipft \
    && mkdir -p /data /hf-cache \
    && chown clipft:clipft /data /hf-cache

WORKDIR /opt/clipft

# The CUDA build of torch/torchvision first, in its own layer (several GB, rarely changes).
# The versions are the ones pyproject.toml pins; `pip install .` below then keeps them, since
# 2.14.1+cu130 satisfies ==2.14.1.
RUN pip install --no-cache-dir --index-url "https://download.pytorch.org/whl/${TORCH_CUDA}" \
        torch==2.14.1 torchvision==0.29.1

COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY worker ./worker
COPY migrations ./migrations
# Install the project, then check that the console command exists and imports.
RUN pip install --no-cache-dir . \
    && rm -rf build ./*.egg-info \
    && clipft --help > /dev/null

USER 10001:10001

EXPOSE 8000

# No curl in the slim image: ask /health with Python. urlopen raises on a 503 (database or
# broker not answering) and on a refused connection, so either makes the check fail.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=5)"]

CMD ["clipft", "api", "--host", "0.0.0.0", "--port", "8000"]
