"""Interop tests are a package so that their conftest does not shadow
tests/integration/conftest.py as the top-level module `conftest`."""
