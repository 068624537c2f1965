"""One case segmented: its options, its modes (2D, fixed and propagated 3D) and its ledger."""
