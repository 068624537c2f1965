"""Fetching the pretrained weights and public data, and building the bundled samples and the public
training tree (``make weights``, ``make samples``, ``make public-tree``)."""
