"""The library-error table: every refusal from adapters, retrieval and eval maps to one
client-facing error, with the status, code and param the API has always answered."""

from __future__ import annotations

import pytest

from adapters.dataset_registry import DatasetRegistryError
from adapters.jobs import JobConflict
from adapters.registry import InUse, NotFound, RegistryError
from adapters.validation import AdapterInvalid
from eval.rubrics import RubricError
from gateway.exceptions import GatewayError, from_library, library_errors
from retrieval.collections import RetrievalError


@pytest.mark.parametrize(
    ("error", "status", "code", "param"),
    [
        (AdapterInvalid("outside_root", "outside the adapter root"), 400, "outside_root", "path"),
        (JobConflict("extract", 3, "training"), 409, "job_active", "alias"),
        (InUse("in_use", "extract@v1 is aliased"), 409, "in_use", None),
        (RegistryError("job_active", "busy"), 409, "job_active", None),
        (DatasetRegistryError("frozen_exists", "frozen"), 409, "frozen_exists", None),
        (NotFound("adapter x@v1"), 404, "not_found", None),
        (RegistryError("bad_name", "bad"), 400, "bad_name", None),
        (RetrievalError("not_found", "no such collection"), 404, "not_found", None),
        (RetrievalError("exists", "already there"), 409, "exists", None),
        (RetrievalError("bad_filter", "bad filter"), 400, "bad_filter", None),
        (RubricError("bad regex", path="checks[1].pattern"), 400, "invalid_rubric",
         "checks[1].pattern"),
        (RubricError("not YAML"), 400, "invalid_rubric", None),
    ],
)  # fmt: skip
def test_library_errors_map_through_one_table(
    error: Exception, status: int, code: str, param: str | None
) -> None:
    mapped = from_library(error)
    assert (mapped.status_code, mapped.code, mapped.param) == (status, code, param)
    assert mapped.message == str(error)


def test_library_errors_context_manager_raises_the_mapped_error_from_the_original() -> None:
    original = RetrievalError("not_found", "collection docs does not exist")
    with pytest.raises(GatewayError) as caught, library_errors():
        raise original
    assert caught.value.status_code == 404 and caught.value.__cause__ is original


def test_other_errors_pass_through_library_errors() -> None:
    with pytest.raises(KeyError), library_errors():
        raise KeyError("not a library refusal")
