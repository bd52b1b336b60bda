"""Bugs injected into real worker processes by the fault suite (``Worker(include=...)``)."""
