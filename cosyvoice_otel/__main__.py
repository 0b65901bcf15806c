"""``python -m cosyvoice_otel`` is ``cosyvoice-traced``."""

import sys

from .cli import main

sys.exit(main())
