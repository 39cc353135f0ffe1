"""Audio: response formats and encoders, chunk stitching and speed, the assembler, decoding."""

from chatterbox_serve.audio.assembler import AudioAssembler
from chatterbox_serve.audio.decoding import decode_audio
from chatterbox_serve.audio.formats import (
    SAMPLE_RATE,
    AudioFormat,
    StreamingEncoder,
    encode_audio,
    fix_wav_sizes,
    to_pcm16,
    wav_header,
)
from chatterbox_serve.audio.stitching import Stitcher, change_speed

__all__ = [
    "SAMPLE_RATE",
    "AudioAssembler",
    "AudioFormat",
    "Stitcher",
    "StreamingEncoder",
    "change_speed",
    "decode_audio",
    "encode_audio",
    "fix_wav_sizes",
    "to_pcm16",
    "wav_header",
]
