"""Fruits! core library: what every service and Spark job runs, and nothing else.

Domain code that must be identical wherever it runs (image preprocessing, featurizer,
PCA, classifier, model bundles, evaluation, fruit catalog) and the plumbing (settings,
typed Avro records, the Kafka stage loop, metrics, S3). It imports nothing above it
(the import-linter contract in pyproject.toml checks this)."""
