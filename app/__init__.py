"""Distillery's HTTP service. Never imports torch or worker/."""
