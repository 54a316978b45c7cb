"""Front door: the Typer command line."""
