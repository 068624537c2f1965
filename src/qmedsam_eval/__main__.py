"""``python -m qmedsam_eval`` == ``qmedsam-eval``."""
import sys

from qmedsam_eval.cli import main

sys.exit(main())
