"""The media boundary: reading and writing images, videos and files.

Everything that crosses from disk into the library passes here and comes out in the library's one
convention (RGB, uint8 HxWx3 arrays at this boundary; float NCHW tensors in [0, 1] inside).
"""
