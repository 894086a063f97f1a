# Loopline pipeline image: the ML stack (.venv from requirements/pipeline.lock) and the project.
# Build from the repository root:  docker build -f docker/pipeline.Dockerfile -t loopline/pipeline .
# No secret is baked in: credentials come from the environment at run time (see docker/.env.example).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    DVC_NO_ANALYTICS=1 GX_ANALYTICS_ENABLED=false TF_CPP_MIN_LOG_LEVEL=2 \
    LOOPLINE_PROJECT_DIR=/opt/loopline LOOPLINE_PIPELINE_VENV=/opt/loopline/.venv

RUN apt-get update && apt-get install -y --no-install-recommends git libgomp1 tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 50000 loopline

WORKDIR /opt/loopline
COPY requirements/pipeline.lock requirements/dev.lock requirements/
RUN python -m venv .venv && .venv/bin/pip install --no-cache-dir "uv==0.13.8" \
    && .venv/bin/uv pip sync --no-cache --python .venv/bin/python requirements/pipeline.lock

COPY pyproject.toml params.yaml dvc.yaml ./
COPY pipelines/ pipelines/
COPY dags/ dags/
COPY plugins/ plugins/
COPY .dvc/config .dvc/config
COPY .dvcignore .gitignore Makefile ./
RUN .venv/bin/uv pip install --no-cache --python .venv/bin/python --no-deps -e . \
    # DVC and the per-run workspaces (git clones) need a git repository: the image's files, one commit.
    && git init -q && git add -A \
    && git -c user.name=loopline -c user.email=image@loopline.invalid commit -qm "image snapshot" \
    && mkdir -p /data runs .dvc/cache && chown -R loopline:loopline /opt/loopline /data

USER loopline
ENV PATH=/opt/loopline/.venv/bin:$PATH
HEALTHCHECK --interval=60s --timeout=20s CMD ["loopline", "check-params"]
ENTRYPOINT ["tini", "--"]
CMD ["loopline", "--help"]
