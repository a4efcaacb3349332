"""The swap stage: colour transfer, paste-back blending and temporal smoothing, and their pipeline.

The building blocks are pure image and trajectory maths (``colour.py``, ``blend.py``,
``smoothing.py``), each with one registry (``COLOUR_TRANSFERS``, ``BLENDERS``, ``SMOOTHERS``); they
read no files and keep no global state, so the pipeline that composes them owns all I/O.
"""
