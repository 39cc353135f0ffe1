"""The watermark route: does an uploaded file carry the Perth watermark our speech carries."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, UploadFile

from chatterbox_serve.audio.watermark import detect_watermark
from chatterbox_serve.protocol import ERROR_RESPONSES, WatermarkDetection
from chatterbox_serve.voices.validation import read_bounded
from deployments.routes import State

router = APIRouter()


@router.post(
    "/v1/audio/watermark/detect", response_model=WatermarkDetection, responses=ERROR_RESPONSES
)
@router.post(
    "/audio/watermark/detect",
    response_model=WatermarkDetection,
    responses=ERROR_RESPONSES,
    include_in_schema=False,
)
def detect(file: Annotated[UploadFile, File()], state: State) -> WatermarkDetection:
    """Look for the watermark in `file` (any format voice uploads take, within their caps)."""
    data = read_bounded(file.file, state.settings.server.max_upload_bytes, "file")
    found = detect_watermark(data, "file")
    return WatermarkDetection(watermarked=found.watermarked, confidence=found.confidence)
