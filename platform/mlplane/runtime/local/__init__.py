"""The local runtime: real components as supervised processes on one machine.

``plan`` (pure) turns the spec into process specs; ``supervisor`` (a daemon) runs and watches them;
``control`` is how the CLI talks to the supervisor.
"""
