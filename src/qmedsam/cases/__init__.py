"""Case files: reading and checking them, writing results atomically, overlays."""
