"""Prefect flows: wiring only. The logic lives in :mod:`tasks` and :mod:`compressors`."""
