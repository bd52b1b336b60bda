"""Toy extensions, as a user would write them in a package of their own and name in
TAVUS_EXTENSIONS (tests/test_extensions.py loads them into real processes)."""
