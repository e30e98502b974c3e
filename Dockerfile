# syntax=docker/dockerfile:1

# Build stage: a wheel of the project and of every dependency, compiled here so
# that the runtime image needs no compiler.
FROM python:3.11-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY tables ./tables
COPY web ./web
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Runtime stage: the installed package (no extras: no embedded servers) and a non-root user.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    EDGE_HOST=0.0.0.0 \
    EDGE_PORT=8000 \
    WORKER_WEB_PORT=6066 \
    BTS_DATA_DIR=/data \
    LOG_FORMAT=json
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels bts-guru \
 && groupadd --system --gid 10001 bts \
 && useradd --system --uid 10001 --gid bts --home-dir /home/bts --create-home bts \
 && mkdir -p /data \
 && chown bts:bts /data
USER bts
WORKDIR /home/bts
VOLUME ["/data"]
EXPOSE 8000 6066
# Probes the edge; worker services override it with their own port (see docker-compose.yml).
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('EDGE_PORT', '8000'), timeout=2)"]
ENTRYPOINT ["bts-guru"]
CMD ["edge"]
