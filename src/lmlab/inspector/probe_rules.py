"""Health rules over the one-off probes of the model and the data (probes.py)."""

from __future__ import annotations
