"""The pipeline spec: models, loading with line numbers, parameters."""
