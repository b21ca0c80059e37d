"""The mlplane Kubernetes operator (kopf). Placeholder: built by the Kubernetes issue.

It will reconcile ``ModelDeployment`` objects with the same spec models (:mod:`mlplane.spec`)
that the local runtime uses.
"""
