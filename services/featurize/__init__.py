"""featurize: runs the ONNX featurizer on batches of preprocessed photos."""
