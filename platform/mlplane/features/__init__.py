"""Feast feature store: the platform's repo config (:mod:`.config`) and online features joined to
inference requests (:mod:`.online`). Importing this package does not import feast."""
