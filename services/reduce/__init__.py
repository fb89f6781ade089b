"""reduce: projects feature vectors on the current PCA of the model store."""
