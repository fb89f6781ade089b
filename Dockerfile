# One image for the five services, the HTTP gateway, the provisioning step and the trainer
# of docker-compose.yml: `python -m services.<name>`. The Spark job has its own image, with
# Java and the connector jars: deploy/spark/Dockerfile.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FRUITS_STATE_DIR=/tmp/fruits

WORKDIR /app
COPY . .
# Editable: the schemas, catalog, featurizer and the gateway's page (services/gateway/static)
# are found next to the code, as in a checkout; Swagger UI's assets come with the
# swagger-ui-bundle dependency. The versions of requirements/lock.txt (`make lock`), as on a
# developer's machine and in CI. /var/lib/fruits is owned by the user it runs as: a named
# volume mounted there starts with that owner, so the gateway can write its SQLite store.
RUN pip install -c requirements/lock.txt -e . && useradd --system --no-create-home fruits \
    && mkdir -p /var/lib/fruits && chown fruits: /var/lib/fruits
USER fruits

# Each service serves /metrics on its FRUITS_METRICS_PORT (9101-9105), the gateway on its
# FRUITS_GATEWAY_PORT (18080).
CMD ["fruits", "--help"]
