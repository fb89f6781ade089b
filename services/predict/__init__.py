"""predict: classifies reduced features and publishes predictions with fruit facts."""
