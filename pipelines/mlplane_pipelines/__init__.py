"""Training and data pipelines that run against an mlplane platform.

``python -m mlplane_pipelines.iris`` trains, logs and registers the demo model.
"""
