# The Airflow image of docker-compose.yaml: the official image with this provider installed.
# The tag must equal the apache-airflow pin in constraints.txt (tests/unit/test_docker_compose.py checks).
FROM apache/airflow:3.3.2

# Mount points of the compose file's named volumes. A new named volume takes the owner and mode of the
# image's directory, so they are writable by the airflow user and, as the official image does for any
# UID, by group 0. The auth and token hand-over directories hold passwords and tokens: group-only.
USER root
RUN mkdir -p /opt/airflow/canvas_provider /opt/airflow/data/brightspace_data_sets /opt/airflow/auth /shared \
 && chown -R airflow:0 /opt/airflow/canvas_provider /opt/airflow/data /opt/airflow/auth /shared \
 && chmod -R 2775 /opt/airflow/canvas_provider /opt/airflow/data \
 && chmod 2770 /opt/airflow/auth /shared

# As the official docs say: install as the airflow user, and pin apache-airflow so pip cannot move it.
USER airflow
COPY --chown=airflow:0 pyproject.toml README.md /opt/airflow-provider-canvas/
COPY --chown=airflow:0 airflow_provider_canvas /opt/airflow-provider-canvas/airflow_provider_canvas
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" "/opt/airflow-provider-canvas[postgres]"
