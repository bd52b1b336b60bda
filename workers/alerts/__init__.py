"""Alerts: rules that turn events into alerts, and notifiers that deliver them once per cause."""
