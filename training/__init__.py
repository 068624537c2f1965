"""QMedSAM training tree: LiteMedSAM in float and Brevitas-quantized form, export, QAT."""
