"""Training and data pipelines that run against an mlplane platform."""
