# Meridian node image. Build (the classic builder: BuildKit leaks layers on this engine):
#   DOCKER_BUILDKIT=0 docker build -t meridian .
# Run one node (see docker-compose.yml for a whole cluster and docs/operations.md#docker):
#   docker run --rm -p 127.0.0.1:7201:7000 meridian serve --region eu-west \
#       --listen 0.0.0.0:7000 --data /data --insecure

# -- builder: a virtual environment with the dependencies, then Meridian itself ----------------
FROM python:3.11-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
WORKDIR /src
# Dependencies first, from pyproject.toml alone: editing the code does not reinstall them.
# Every dependency ships wheels for CPython 3.11 on Linux (the image has no compiler).
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && /opt/venv/bin/pip install --only-binary=:all: -r requirements.txt
COPY README.md ./
COPY app ./app
COPY crdt ./crdt
RUN /opt/venv/bin/pip install --no-deps . \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib

# -- final: the base system, the venv, a non-root user, a data volume --------------------------
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 meridian \
    && useradd --system --uid 10001 --gid meridian --home-dir /data --no-create-home meridian \
    && mkdir -p /data /etc/meridian \
    && chown meridian:meridian /data
COPY --from=builder /opt/venv /opt/venv
# The topology of the Compose cluster; mount another over it for other clusters.
COPY docker/regions.toml /etc/meridian/regions.toml
USER meridian
WORKDIR /data
# A named volume mounted here starts with the ownership above.
VOLUME ["/data"]
EXPOSE 7000
# In Python, not curl (the image has none). Nodes listen on 7000 inside their container.
HEALTHCHECK --interval=3s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7000/v1/health', timeout=2)"]
ENTRYPOINT ["meridian"]
CMD ["--help"]
