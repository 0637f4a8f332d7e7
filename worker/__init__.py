"""Distillery's GPU side: Celery tasks around the pure-PyTorch engine."""
