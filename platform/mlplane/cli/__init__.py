"""The ``mlplane`` command line (typer + rich)."""
