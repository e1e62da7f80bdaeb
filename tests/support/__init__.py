"""Helpers shared by several test modules (fixtures live in conftest.py)."""
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent.parent
REPO = TESTS_DIR.parent
DATA_DIR = TESTS_DIR / "data"
