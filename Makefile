# Fruits! — `make demo` sets up what is missing and runs the pipeline on the sample;
# `make test` runs every test. Setup is idempotent and cached (.venv, .jars).

PYTHON_SYSTEM ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA ?= ../shared/data/fruits360
KAFKA_JARS := .jars/kafka/.complete

.PHONY: help setup up down status demo test unit-test integration-test bench train services clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

setup: $(VENV)/.installed $(KAFKA_JARS)  ## create the venv and fetch the Kafka jars (once)

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON_SYSTEM) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[local,dev]'
	touch $@

$(KAFKA_JARS): deploy/kafka/pom.xml
	mvn -q -f deploy/kafka/pom.xml dependency:copy-dependencies -DoutputDirectory=$(CURDIR)/.jars/kafka
	touch $@

up: setup  ## start Kafka and SeaweedFS on loopback, create topics and buckets
	$(PY) -m fruits.stack up

down:  ## stop Kafka and SeaweedFS (data kept; `python -m fruits.stack down --purge` deletes it)
	$(PY) -m fruits.stack down

status:  ## what runs, and where
	$(PY) -m fruits.stack status

demo: up  ## train if needed, stream the sample's Test images through the five services
	$(VENV)/bin/fruits demo --data $(DATA)

train: up  ## train a new model bundle on $(DATA) and make it current
	$(VENV)/bin/fruits train $(DATA)

services: up  ## run the five services in the foreground
	$(VENV)/bin/fruits services

bench: up  ## featurizer-alone vs end-to-end throughput, latency at half load, peak RSS
	$(PY) -m fruits.bench --data $(DATA)

test: setup  ## unit and integration tests (the integration stack is started by the tests)
	$(PY) -m pytest

unit-test: setup  ## unit tests only (no servers)
	$(PY) -m pytest tests/unit

clean:  ## remove the venv, jars and local stack state
	-$(PY) -m fruits.stack down
	rm -rf $(VENV) .jars .stack
