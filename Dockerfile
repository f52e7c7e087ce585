# syntax=docker/dockerfile:1
# One image for the API and the workers. Build: docker build -t concord .  (training workers:
# docker build --build-arg EXTRAS=worker,train -t concord-train .). Shared files: -e CONCORD_STORAGE_URL=s3://bucket/prefix
# with the AWS_* variables (README, "Multi-machine deployment"). The steps are scripts/container_recipe.sh,
# which CI runs outside a container engine (`scripts/container_recipe.sh check`).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG EXTRAS=worker
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHON=python3.11
WORKDIR /src
# Dependencies first, from pyproject.toml at the lock's versions: this layer is reused until either changes.
COPY pyproject.toml constraints.txt ./
COPY scripts/container_recipe.sh scripts/
RUN scripts/container_recipe.sh deps /opt/concord "${EXTRAS}"
# Then the project itself, a regular install (templates and migrations go to /opt/concord/share/concord).
COPY README.md alembic.ini ./
COPY app app
COPY worker worker
COPY migrations migrations
COPY templates templates
RUN scripts/container_recipe.sh app /opt/concord

FROM ${PYTHON_IMAGE} AS runtime
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin concord \
    && mkdir /data && chown concord /data
COPY --from=build /opt/concord /opt/concord
ENV PATH=/opt/concord/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    CONCORD_DATA_DIR=/data CONCORD_LOG_FORMAT=json
USER concord
WORKDIR /data
VOLUME /data
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=3).status != 200)"]
CMD ["concord", "serve", "--host", "0.0.0.0", "--port", "8000"]
