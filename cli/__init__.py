"""Tools for people: the ``tavus-callbacks`` command, the local dev runner and the Tavus simulator.

The one place besides ``tests/`` and ``bench/`` that may join the receiver and the workers; no
runtime code imports it.
"""
