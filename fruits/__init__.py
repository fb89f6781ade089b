"""Fruits! core: domain code (imaging, featurizer, PCA, classifier, model bundles,
fruit catalog) and plumbing (settings, Avro serde, Kafka loop, metrics, S3 store)
shared by the services, the trainer and the CLI. Nothing here imports from above."""
