"""The base of the library's config models: unknown keys are dropped with a warning.

An older gateway can then read a config written by a newer one (``model_dump`` round-trips).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from pydantic import BaseModel, model_validator


class TolerantConfig(BaseModel):
    """A pydantic model that ignores keys it has no field for, logging them as a warning.

    Subclasses set ``_logger`` to their module's logger, so the warning comes from it.
    """

    _logger: ClassVar[logging.Logger] = logging.getLogger("tuneloop.adapters")

    @model_validator(mode="before")
    @classmethod
    def _drop_unknown(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(cls.model_fields))
            if unknown:
                cls._logger.warning(
                    "%s: ignoring unknown keys %s", cls.__name__, ", ".join(unknown)
                )
                return {key: value for key, value in data.items() if key not in unknown}
        return data
