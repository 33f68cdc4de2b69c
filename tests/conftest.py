"""Shared test configuration. Suites keep their own fixtures in their folder's conftest.py."""
