"""Builds the Celery app (``worker.celery_app:celery_app``), nothing else."""

from celery import Celery

from app.broker import celery_config
from app.config import get_settings

celery_app = Celery("distill", include=["worker.tasks"])
celery_app.conf.update(celery_config(get_settings()))
