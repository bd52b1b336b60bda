"""What every part of tavus-callbacks agrees on: payload schemas, the queue contract, settings.

This package imports nothing else of ours, so the receiver and the workers can both depend on it.
"""
