"""QMedSAM evaluation: organiser-compatible DSC/NSD scoring, organiser-style timed runs, overlays,
and conversion between medical image formats and challenge cases (``qmedsam-eval``,
``qmedsam-convert``).  Not part of the submission image: it needs scipy, matplotlib, SimpleITK."""
