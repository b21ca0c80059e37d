"""Runtimes that execute the mlplane spec: ``local`` (supervised processes on one machine)."""
