# Fruits! — `make demo` sets up what is missing and runs the pipeline on the sample;
# `make test` runs every test. Setup is idempotent and cached (.venv, .jars).

PYTHON_SYSTEM ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA ?= ../shared/data/fruits360
KAFKA_JARS := .jars/kafka/.complete
SPARK_JARS := .jars/spark/.complete
LOCK := requirements/lock.txt
PROMETHEUS_PORT ?= 19090
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help setup lock up down status demo test unit-test integration-test bench train services clean web \
	prometheus prometheus-install chromium chromium-install monitor monitor-down bench-metrics spark-jars train-spark \
	spark-streaming faults soak

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

setup: $(VENV)/.installed $(KAFKA_JARS) $(SPARK_JARS) prometheus chromium  ## create the venv, fetch the Kafka and Spark jars, install Prometheus and Chromium (once)

prometheus:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || $(MAKE) --no-print-directory prometheus-install

prometheus-install:  ## install Prometheus and promtool from Debian's package (its system service is left stopped)
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
	@# The package may enable and start a system-wide Prometheus on :9090; ours (make monitor)
	@# runs on its own port with its own data, so stop and disable that one.
	-@if command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1; then \
		$(SUDO) systemctl disable --now prometheus; \
	elif [ -x /etc/init.d/prometheus ]; then $(SUDO) /etc/init.d/prometheus stop >/dev/null 2>&1; fi; true

chromium:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || $(MAKE) --no-print-directory chromium-install

chromium-install:  ## install Debian's chromium and chromedriver: the browser test (tests/integration/test_web.py) drives them
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver

# The locked versions first (hash-checked), then the project itself, which adds nothing else
# (`pip check` fails if pyproject.toml asks for something the lock lacks: run `make lock`).
$(VENV)/.installed: pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON_SYSTEM) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps -e '.[local,dev,spark]'
	$(PY) -m pip check
	touch $@

lock:  ## refresh requirements/lock.txt: the newest versions pyproject.toml allows, with hashes (`make setup` installs them)
	test -x $(PY) || $(PYTHON_SYSTEM) -m venv $(VENV)
	test -x $(VENV)/bin/uv || $(PY) -m pip install --quiet 'uv>=0.13,<1'
	$(VENV)/bin/uv pip compile pyproject.toml --extra local --extra dev --extra spark --upgrade \
		--python-version 3.11 --python-platform x86_64-unknown-linux-gnu --generate-hashes \
		--custom-compile-command 'make lock' --quiet -o $(LOCK)

$(SPARK_JARS): deploy/spark/pom.xml
	rm -rf .jars/spark
	mvn -q -B -f deploy/spark/pom.xml dependency:copy-dependencies -DoutputDirectory=$(CURDIR)/.jars/spark
	touch $@

spark-jars: $(SPARK_JARS)  ## fetch the Spark jobs' jars (Kafka source, spark-avro, S3A + AWS SDK; ~22 MB, once)

$(KAFKA_JARS): deploy/kafka/pom.xml
	mvn -q -f deploy/kafka/pom.xml dependency:copy-dependencies -DoutputDirectory=$(CURDIR)/.jars/kafka
	touch $@

up: setup  ## start Kafka and SeaweedFS on loopback, create topics and buckets
	$(PY) -m tools.stack up

down:  ## stop Kafka and SeaweedFS (data kept; `python -m tools.stack down --purge` deletes it)
	$(PY) -m tools.stack down

status:  ## what runs, and where
	$(PY) -m tools.stack status

demo: up  ## train if needed, stream the sample's Test images through the five services
	$(VENV)/bin/fruits demo --data $(DATA)

train: up  ## train a new model bundle (Fruits-360 $(DATA), GroceryStore train, empty scenes) and make it current
	$(VENV)/bin/fruits train $(DATA)

train-spark: up  ## train with Spark (FRUITS_SPARK_MASTER): pack the training set into Parquet on the lake (once), train, publish
	$(VENV)/bin/fruits train --engine spark --upload $(DATA)

spark-streaming: up  ## run the Spark streaming job (Parquet lake + live PCA updates) in the foreground
	$(PY) -m spark.streaming_job

web: up  ## the web page: train if needed, start the services and the gateway, print the URL and a demo token; Ctrl-C stops
	$(PY) -m tools.web --data $(DATA)

services: up  ## run the five services in the foreground
	$(VENV)/bin/fruits services

monitor: setup  ## start Prometheus on 127.0.0.1:$(PROMETHEUS_PORT) against the running services; prints its URL
	$(PY) -m tools.monitor up --port $(PROMETHEUS_PORT)

monitor-down:  ## stop the Prometheus started by `make monitor` (its data is kept in .stack/prometheus)
	$(PY) -m tools.monitor down

EVAL_DIRS ?= ../shared/data/grocerystore/val $(DATA)/Test .stack/eval
evaluate: up  ## score the current bundle offline on GroceryStore val, $(DATA)/Test and 500 generated non-fruit images
	$(PY) -m tools.nonfruit .stack/eval --count 500
	$(VENV)/bin/fruits evaluate --offline --json .stack/eval/report.json $(EVAL_DIRS)

bench: up  ## median of 3 runs (JSON in bench-results/): end-to-end vs featurizer-alone throughput, CPU per record, hop waterfall at half load, peak RSS
	$(PY) -m tools.bench --data $(DATA)

bench-featurizers: setup  ## throughput of each ONNX featurizer in core/models, in one run, relative to MobileNetV2-100
	$(PY) -m tools.bench_featurizers

bench-metrics: setup  ## metrics on vs off: CPU per record of the five services, on a throwaway stack
	$(PY) -m tools.bench_metrics --own-stack --data $(DATA)

faults: setup  ## broker SIGKILLed, then S3 stopped 30 s, mid-stream on a throwaway stack: recovery times, lost, duplicated
	$(PY) -m tools.faults --data $(DATA)

SOAK_ARGS ?=
soak: setup  ## 20 min with a service killed each minute, 10 without: lost, duplicated, p99 per minute, RSS (SOAK_ARGS; not in CI)
	$(PY) -m tools.soak --data $(DATA) $(SOAK_ARGS)

test: setup  ## the layer contract (lint-imports), unit and integration tests (the integration stack is started by the tests)
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

unit-test: setup  ## unit tests only (no servers)
	$(PY) -m pytest tests/unit

clean:  ## remove the venv, jars and local stack state
	-$(PY) -m tools.stack down
	rm -rf $(VENV) .jars .stack
