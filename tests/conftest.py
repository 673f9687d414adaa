import sys
from pathlib import Path

# Tests import the package from this checkout, never an installed copy, and
# share the harness in tests/servicekit.py.
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]
