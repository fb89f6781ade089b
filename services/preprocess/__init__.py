"""preprocess: turns ingested photos into the featurizer's uint8 input tensor."""
