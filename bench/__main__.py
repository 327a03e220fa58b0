"""``python -m bench``: see ``bench.load``."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `--start` imports tests.support.stack from the repository
    sys.path.insert(0, str(ROOT))

from bench.load import main  # noqa: E402

sys.exit(main())
