"""The training recipes, one module per model family (see ``swaplab.train.recipe``)."""
