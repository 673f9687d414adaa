import sys
from pathlib import Path

# Tests import the package from this checkout, never an installed copy.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
