"""The part registries: encoders, bottlenecks, decoders and discriminators, by name.

Construction contract (what a model passes, so any registered part can replace another):

- ``ENCODERS.create(name, in_channels=, resolution=, dims=, variant=)``: a module mapping
  (N, C, R, R) images to a code; it exposes ``out_channels``, ``out_size``, ``out_features`` and
  ``flat`` (True: the code is (N, out_features); False: (N, out_channels, out_size, out_size)).
- ``BOTTLENECKS.create(name, in_features=, in_channels=, in_size=, ae_dims=, resolution=,
  variant=)``: maps the encoder's code to a spatial code; exposes ``out_channels``, ``out_size``.
- ``DECODERS.create(name, in_channels=, in_size=, dims=, mask_dims=, resolution=, variant=)``:
  maps a spatial code to ``(rgb, mask)``, (N, 3, R, R) and (N, 1, R, R), both in [0, 1].

This module only holds the tables; it must not import any part (that would be a cycle).
"""

from __future__ import annotations

from swaplab.registry import Registry

ENCODERS: Registry = Registry("encoder")
BOTTLENECKS: Registry = Registry("bottleneck")
DECODERS: Registry = Registry("decoder")
#: Discriminators of the GAN families (``multiscale``, ``projected``: see ``discriminators.py``).
DISCRIMINATORS: Registry = Registry("discriminator")
