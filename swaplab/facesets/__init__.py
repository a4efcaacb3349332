"""Facesets: aligned face crops with their metadata on disk, and the extraction that makes them."""
