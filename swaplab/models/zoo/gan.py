"""Work in progress: filled in by the zoo work."""
