"""swaplab.train: the one training loop and the recipes it runs, one per model family.

``swaplab.train.entry.build_config(["model=NAME", ...])`` picks the recipe and builds its typed run
config; ``swaplab.train.loop.train(cfg)`` runs it (resume, checkpoints, logs, previews, DDP);
``swaplab.train.export.export_model`` writes the model card. Recipes: ``swaplab.train.recipes``.
"""
