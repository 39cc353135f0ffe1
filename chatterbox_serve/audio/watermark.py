"""Resemble AI's Perth implicit watermark: marking generated speech, and finding the mark.

Upstream Chatterbox marks every clip its `generate` returns with
`perth.PerthImplicitWatermarker().apply_watermark(wav, sample_rate=sr)`. This module
runs the same network (the `resemble-perth` wheel ships it, `perth_net_250000.pth.tar`)
the same way: resample to the network's 32 kHz, STFT, add the encoder's residual to the
magnitudes below 2 kHz, inverse STFT with the original phase, resample back. Detection
is perth's `get_watermark` without the rounding: the decoder's output in [0, 1], which
perth rounds at 0.5.

Why not call `PerthImplicitWatermarker` itself: its module imports `torchaudio` (for
two STFT wrappers) and `perth.perth_net` imports `pkg_resources`; torchaudio's
extension does not load with the CPU torch the tests run on (2.13), and recent
setuptools (84 here) no longer ships `pkg_resources`. So perth's own network classes
(`Encoder`, `Decoder`), its magnitude and phase helpers and its checkpoint are loaded
here, and the two STFTs are `torch.stft`/`torch.istft` with the arguments torchaudio's
`Spectrogram(power=None)` and `InverseSpectrogram` pass (same window, centre padding,
no normalisation).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
import threading
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from chatterbox_serve.audio.decoding import DecodeLimits, decode_untrusted
from chatterbox_serve.audio.formats import SAMPLE_RATE

# The `X-Watermark` header's value on marked audio.
WATERMARK_NAME = "perth"
# perth's `get_watermark` rounds the decoder's confidence: at or above this, marked.
DETECTION_THRESHOLD = 0.5


class PerthWatermarker:
    """Perth's trained encoder and decoder, loaded once per process from the wheel."""

    def __init__(self) -> None:
        import torch

        root = _perth_net_root()
        implicit = "perth.perth_net.perth_net_implicit"
        model = importlib.import_module(f"{implicit}.model")
        encoder = importlib.import_module(f"{implicit}.model.encoder")
        decoder = importlib.import_module(f"{implicit}.model.decoder")
        checkpoints = importlib.import_module(f"{implicit}.checkpoint_manager")
        self._utils = importlib.import_module(f"{implicit}.utils")
        manager = checkpoints.CheckpointManager(root / "pretrained", "implicit")
        self.hp = manager.hp
        state = manager.load_latest()["model"]
        subband = model.compute_subband_freq(self.hp)
        self._encoder = encoder.Encoder(self.hp.hidden_size, subband)
        self._decoder = decoder.Decoder(self.hp.hidden_size, subband)
        for name, net in (("encoder", self._encoder), ("decoder", self._decoder)):
            cut = len(name) + 1
            net.load_state_dict({k[cut:]: v for k, v in state.items() if k[:cut] == f"{name}."})
            net.eval()
        self._window = torch.hann_window(self.hp.window_size)
        # The checkpoint carries torchaudio's window buffer: the STFT here must match it.
        if not torch.equal(self._window, state["ap.spectrogram.window"]):
            raise RuntimeError("perth's checkpoint expects a different STFT window")

    def apply(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        """`audio` with the watermark in it: float32, the same length and rate."""
        import librosa
        import torch

        audio = np.asarray(audio, dtype=np.float32)
        if len(audio) == 0:
            return audio
        rate = self.hp.sample_rate
        signal = librosa.resample(audio, orig_sr=sample_rate, target_sr=rate)
        n = len(signal)
        # The STFT's reflect padding needs more than half a window of signal.
        signal = np.pad(signal, (0, max(0, self.hp.n_fft - n)))
        with torch.inference_mode():
            magnitude, phase = self._utils.cx_to_magphase(self.hp, self._stft(signal))
            marked, _mask = self._encoder(magnitude[None])
            spectrum = self._utils.magphase_to_cx(self.hp, marked[0], phase)
            out = torch.istft(
                spectrum,
                n_fft=self.hp.n_fft,
                hop_length=self.hp.hop_size,
                win_length=self.hp.window_size,
                window=self._window,
                center=True,
                normalized=False,
                onesided=True,
                length=len(signal),
            ).numpy()[:n]
        back = librosa.resample(out, orig_sr=rate, target_sr=sample_rate)
        return np.asarray(librosa.util.fix_length(back, size=len(audio)), dtype=np.float32)

    def confidence(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
        """How sure the decoder is that `audio` is marked, in [0, 1]."""
        import librosa
        import torch

        audio = np.asarray(audio, dtype=np.float32)
        rate = self.hp.sample_rate
        if sample_rate != rate:
            # perth's `get_watermark` resamples this way before detecting.
            audio = librosa.resample(
                audio, orig_sr=sample_rate, target_sr=rate, res_type="polyphase"
            )
        audio = np.pad(audio, (0, max(0, self.hp.n_fft - len(audio))))
        with torch.inference_mode():
            magnitude, _phase = self._utils.cx_to_magphase(self.hp, self._stft(audio))
            score = self._decoder(magnitude[None])[0].clip(0.0, 1.0)
        value = float(score)
        return value if np.isfinite(value) else 0.0

    def _stft(self, signal: np.ndarray) -> Any:
        import torch

        return torch.stft(
            torch.from_numpy(np.ascontiguousarray(signal, dtype=np.float32)),
            n_fft=self.hp.n_fft,
            hop_length=self.hp.hop_size,
            win_length=self.hp.window_size,
            window=self._window,
            center=True,
            pad_mode="reflect",
            normalized=False,
            onesided=True,
            return_complex=True,
        )


@dataclass(frozen=True)
class Detection:
    """Whether a file carries the Perth watermark, and the decoder's confidence."""

    watermarked: bool
    confidence: float


def detect_watermark(data: bytes, param: str = "file") -> Detection:
    """Decode an untrusted upload as voice uploads are decoded, and look for the mark.

    Raises what `decode_untrusted` raises: a `ClientError` for anything that is not
    audio we decode within the voice-upload caps (60 s, 10 MiB, ...).
    """
    limits = DecodeLimits(max_bytes=max(len(data), 1))
    decoded = decode_untrusted(data, limits, mono=True, sample_rate=SAMPLE_RATE, param=param)
    score = load_watermarker().confidence(decoded.samples[0], SAMPLE_RATE)
    return Detection(score >= DETECTION_THRESHOLD, round(score, 4))


_load_lock = threading.Lock()


def load_watermarker() -> PerthWatermarker:
    """The process's one `PerthWatermarker` (loading takes about a second)."""
    with _load_lock:
        return _load()


@functools.cache
def _load() -> PerthWatermarker:
    return PerthWatermarker()


def _perth_net_root() -> Path:
    """perth's network folder, importable without running `perth.perth_net.__init__`.

    That `__init__` imports `pkg_resources` and torchaudio, neither of which the
    network needs. Where it imports cleanly it is used as is; otherwise the package is
    registered bare (its folder as its path, none of its code run), as tests/model
    imports upstream Chatterbox's T3 without its `__init__`.
    """
    spec = importlib.util.find_spec("perth")
    if spec is None or spec.origin is None:
        raise RuntimeError("resemble-perth is not installed")
    root = Path(spec.origin).parent / "perth_net"
    if "perth.perth_net" not in sys.modules:
        try:
            importlib.import_module("perth.perth_net")
        except (ImportError, OSError):  # torchaudio raises OSError when its library fails
            bare = types.ModuleType("perth.perth_net")
            bare.__path__ = [str(root)]
            bare.PREPACKAGED_MODELS_DIR = str(root / "pretrained")  # type: ignore[attr-defined]
            sys.modules["perth.perth_net"] = bare
    return root


class WatermarkStream:
    """Marks one request's audio chunk by chunk, a chunk whole or in pieces.

    A whole chunk (`ends=True` with nothing pending) is marked in one pass, as upstream
    marks a clip. A chunk that arrives in pieces cannot be marked piece by piece: each
    pass changes the audio near its edges differently, and the cut shows as a step
    (about -18 dBFS on the sample voices). So each piece is marked together with the
    `CONTEXT` samples before it, and the last `HOLD` samples of each pass are held back
    and crossfaded into the next pass's version of them, which has them well inside.
    The pieces join within the streaming join bound (-40 dBFS against the chunk marked
    whole), `HOLD` samples later than they came.
    """

    CONTEXT = 9_600  # 400 ms at 24 kHz: more than the encoder's ~310 ms receptive field
    HOLD = 1_200  # 50 ms

    def __init__(self, marker: PerthWatermarker | None = None, rate: int = SAMPLE_RATE) -> None:
        """`marker` defaults to the process's one, loaded at the first `mark` (off the loop)."""
        self._marker = marker
        self._rate = rate
        self._context = np.zeros(0, dtype=np.float32)
        self._held = np.zeros(0, dtype=np.float32)

    def mark(self, piece: np.ndarray, ends: bool) -> np.ndarray:
        """Marked audio for `piece`, minus what is held back; `ends` closes the chunk."""
        block = np.concatenate([self._context, np.asarray(piece, dtype=np.float32)])
        if self._marker is None:
            self._marker = load_watermarker()
        marked = self._marker.apply(block, self._rate)
        start, held = len(self._context), len(self._held)
        fade = np.linspace(0.0, 1.0, held + 2, dtype=np.float32)[1:-1]
        joined = self._held * (1.0 - fade) + marked[start - held : start] * fade
        if ends:
            self._context = np.zeros(0, dtype=np.float32)
            self._held = np.zeros(0, dtype=np.float32)
            return np.concatenate([joined, marked[start:]])
        keep = min(self.HOLD, len(marked) - start)
        self._held = marked[len(marked) - keep :].copy()
        self._context = block[max(0, len(block) - self.CONTEXT) :].copy()
        return np.concatenate([joined, marked[start : len(marked) - keep]])
