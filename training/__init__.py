"""The local trainer: labelled images → model bundle, with the core's preprocess,
featurizer, PCA and classifier (the same functions the services run)."""
