# One image for the five services, the provisioning step and the trainer of
# docker-compose.yml: `python -m services.<name>`. The Spark job has its own image, with
# Java and the connector jars: deploy/spark/Dockerfile.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FRUITS_STATE_DIR=/tmp/fruits

WORKDIR /app
COPY . .
# Editable: the schemas, catalog and featurizer are found next to the code, as in a checkout.
# The versions of requirements/lock.txt (`make lock`), as on a developer's machine and in CI.
RUN pip install -c requirements/lock.txt -e . && useradd --system --no-create-home fruits
USER fruits

# Each service serves /metrics on its FRUITS_METRICS_PORT (9101-9105).
CMD ["fruits", "--help"]
