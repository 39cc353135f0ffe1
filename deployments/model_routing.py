"""Which model deployment speaks an item: one handle per loaded family, picked by family.

The builder binds every loaded family's model deployment under its family name
(`chatterbox-turbo`, ...); the audio deployment and the job worker send each item
to the handle of its `SynthesisRequest.family`, the default family's when it names
none (records and callers from before families).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray.serve.handle import DeploymentHandle

from chatterbox_serve.engines.base import SynthesisRequest
from chatterbox_serve.errors import ModelNotFoundError
from chatterbox_serve.families import ModelFamily


class ModelHandles:
    """The model deployment handle of each loaded family."""

    def __init__(self, handles: Mapping[str, DeploymentHandle[Any]], default: ModelFamily) -> None:
        self._handles = {ModelFamily(name): handle for name, handle in handles.items()}
        self._default = default

    def of(self, item: SynthesisRequest) -> DeploymentHandle[Any]:
        """The handle for `item`'s family.

        Raises:
            ModelNotFoundError: the family is not loaded (a job created under another
                configuration).
        """
        family = item.family or self._default
        handle = self._handles.get(family)
        if handle is None:
            raise ModelNotFoundError(
                f"The model {family.value} is not loaded on this service.", param="model"
            )
        return handle
