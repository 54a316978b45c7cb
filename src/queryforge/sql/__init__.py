"""SQL foundations: the canonical dialect, parsing of user SQL, and identifier handling."""
