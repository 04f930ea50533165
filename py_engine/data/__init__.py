"""Training data: datasets, their file formats, batching."""
