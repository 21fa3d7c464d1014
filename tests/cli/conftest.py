# The CLI tests run the commands against the actor runtime of tests/actors: its helpers
# (runtime_helpers) are importable from here, as from the actor tests.

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "actors"))
