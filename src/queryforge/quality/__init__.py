"""Data quality: check rules (and later profiling and PII detection)."""
