"""Pipelines as a project: references between pipelines, their graph and selections."""
