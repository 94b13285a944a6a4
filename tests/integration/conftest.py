"""Integration fixtures: `example_dir` lives in tests/conftest.py (the device tests use it too)."""
