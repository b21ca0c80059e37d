"""Reuse the k8s tests' schema helpers (OpenAPI → JSON Schema) instead of copying them."""

import sys
from pathlib import Path

_K8S_TESTS = str(Path(__file__).resolve().parents[1] / "k8s")
if _K8S_TESTS not in sys.path:
    sys.path.insert(0, _K8S_TESTS)
