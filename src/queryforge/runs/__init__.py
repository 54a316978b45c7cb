"""Runs: compile a pipeline into stages, execute them with write-audit-publish, record everything."""
