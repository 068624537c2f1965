"""The model layer: LiteMedSAM's graphs compiled once from a models folder; it only computes."""
