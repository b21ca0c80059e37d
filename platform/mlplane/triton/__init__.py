"""NVIDIA Triton for ``runtime: triton``, pure parts and the cluster entrypoint: the model repository a
deployment becomes (:mod:`.repository`), tritonserver's restricted-API flags (:mod:`.args`) and the
container entrypoint that adds them (:mod:`.server`, ``python -m mlplane.triton.server``)."""
