"""``python -m cosyvoice_otel`` is ``cosyvoice-traced``."""

import sys

from cosyvoice_otel.launcher.cli import main

sys.exit(main())
