"""The RAG service maps errors to HTTP statuses in one place (`serve_app.rag_error`), deployments included."""

from __future__ import annotations

import json
import pickle

import pytest
from fastapi.exceptions import RequestValidationError

from mlplane.rag import api as dp
from mlplane.rag.generate import GenerationError
from mlplane.rag.serve_app import Failure, error_response, rag_error
from mlplane.rag.store import UnknownCollection, VectorStoreError


@pytest.mark.parametrize("exc, status, code", [
    (UnknownCollection("docs", ["other"]), 404, "collection_not_found"),
    (VectorStoreError("milvus is down"), 503, "not_ready"),
    (GenerationError("the server said 500"), 502, "generator_failed"),
    (dp.TooLarge("too big"), 413, "input_too_large"),
    (RequestValidationError([{"type": "missing", "loc": ("body", "messages"), "msg": "Field required"}]), 422,
     "invalid_body"),
    (RequestValidationError([{"type": "json_invalid", "loc": ("body", 1), "msg": "JSON decode error"}]), 400,
     "invalid_request"),
])
def test_one_table_maps_each_error(exc, status, code):
    response = error_response(exc)
    assert response.status_code == status
    body = json.loads(response.body)
    assert body["error"]["code"] == code and body["error"]["message"]


def test_a_deployment_failure_survives_pickling_with_its_mapping():
    failure = pickle.loads(pickle.dumps(Failure(rag_error(UnknownCollection("docs", [])))))
    assert isinstance(failure.error, dp.CollectionNotFound) and "docs" in failure.error.message


def test_unmapped_errors_are_not_guessed():
    with pytest.raises(TypeError, match="no HTTP mapping for KeyError"):
        rag_error(KeyError("x"))
