"""Faces: detection, landmarks, alignment, masks, tracking, head pose and identity."""
