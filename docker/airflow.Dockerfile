# Loopline Airflow image: the pipeline image plus a separate Airflow environment (/opt/airflow-venv).
# Airflow never imports the ML stack: tasks run DVC stages with /opt/loopline/.venv by absolute path.
# Build after the pipeline image (compose does it through `additional_contexts`):
#   docker build -f docker/airflow.Dockerfile --build-context pipeline=docker-image://loopline/pipeline .
FROM pipeline

USER root
ENV AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/loopline/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/loopline/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    PYTHONPATH=/opt/loopline/plugins
COPY requirements/airflow.lock /opt/loopline/requirements/airflow.lock
RUN python -m venv /opt/airflow-venv \
    && /opt/loopline/.venv/bin/uv pip sync --no-cache --python /opt/airflow-venv/bin/python \
       /opt/loopline/requirements/airflow.lock \
    && mkdir -p /opt/airflow && chown -R loopline:loopline /opt/airflow
COPY docker/healthcheck.py /opt/airflow/healthcheck.py

USER loopline
ENV PATH=/opt/airflow-venv/bin:/opt/loopline/.venv/bin:$PATH
WORKDIR /opt/airflow
HEALTHCHECK --interval=30s --timeout=20s --start-period=60s CMD ["python", "/opt/airflow/healthcheck.py", "api"]
ENTRYPOINT ["tini", "--", "airflow"]
CMD ["version"]
