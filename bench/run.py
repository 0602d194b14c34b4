#!/usr/bin/env python3
"""`make bench` runs this: meshproxy side by side with Envoy, HAProxy, nginx and direct."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sidebyside.cli import main  # needs the path above

if __name__ == "__main__":
    sys.exit(main())
