# Production image of the call runner: `pipecat-realtime-twilio serve` on port 8080.
#
#   docker build -t pipecat-realtime-twilio .
#   docker run --env-file .env -p 8080:8080 -v calls:/data pipecat-realtime-twilio
#
# docs/deploy.md covers settings, Twilio setup, health checks, shutdown and scaling.
# Every dependency ships wheels for linux/amd64 and linux/arm64, so neither stage needs a
# compiler or apt packages.

# --- builder: a virtualenv in /opt/venv with the package and its dependencies -------------
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# Dependencies first, from pyproject.toml alone, so a change to the source reuses this layer.
# EXTRAS names the package's extras to include: by default the drivers of PostgreSQL
# (DATABASE_URL=postgresql+psycopg://...) and Redis (REDIS_URL), so one image serves a single
# instance and a fleet (deploy/compose, deploy/kubernetes) alike. EXTRA_PACKAGES adds packages
# the package does not depend on:
#   docker build --build-arg EXTRAS="postgres redis s3" --build-arg EXTRA_PACKAGES="..." .
ARG EXTRAS="postgres redis"
ARG EXTRA_PACKAGES=""
COPY pyproject.toml ./
RUN python -c 'import sys, tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print("\n".join(p["dependencies"] + [d for e in sys.argv[1:] for d in p["optional-dependencies"][e]]))' $EXTRAS > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt $EXTRA_PACKAGES

# Then the package itself (README.md and LICENSE are part of its metadata).
COPY README.md LICENSE ./
COPY pipecat_realtime_twilio ./pipecat_realtime_twilio
RUN pip install --no-deps . \
    && pipecat-realtime-twilio --help > /dev/null

# --- final: the virtualenv, the bots and an unprivileged user ------------------------------
FROM python:3.11-slim

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    PORT=8080 \
    BOTS_DIR=/app/bots \
    DATABASE_URL=sqlite:////data/calls.db \
    OUTBOX_DIR=/data/outbox \
    RECORDINGS_DIR=/data/recordings

# A fixed numeric UID/GID, so orchestrators can check runAsNonRoot and volumes can be
# chowned to it on the host. /data must be owned by it before VOLUME declares it.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin app \
    && mkdir -p /data \
    && chown app:app /data

WORKDIR /app

COPY --from=builder /opt/venv /opt/venv
# Bots stay owned by root: the app reads them and cannot change them.
COPY bots/ /app/bots/

USER 10001:10001

VOLUME ["/data"]
EXPOSE 8080

# /healthz says the process is up; the shell expands PORT when the check runs.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:${PORT}/healthz', timeout=4)"

# The runner drains on SIGTERM (docs/deploy.md, "Graceful shutdown").
STOPSIGNAL SIGTERM
CMD ["pipecat-realtime-twilio", "serve"]
