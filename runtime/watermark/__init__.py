"""Keyed, payload-carrying audio watermark (keyed log-spectral spread spectrum, KLSS).

Public API (stable; the runtime pipeline and the ``v2a watermark`` CLI use only this)::

    key = load_key(key_file=None)        # key file → $V2A_WATERMARK_KEY (hex) →
                                         # $V2A_WATERMARK_KEY_FILE → public DEMO key (is_demo)
    payload = make_payload(model_id, generation_id)      # 8 + 24 bits → 32-bit int
    marked = embed(audio, sample_rate, key, payload)     # (W,) or (channels, W) float32
    blocks = mark(signal, key, payload).blocks()         # the same, for a v2a_runtime.signals
                                                         # Signal, in blocks (long files)
    det = detect(marked, sample_rate, key, search="auto")  # "auto" | "offset" | "full"
    det = detect_signal(signal, key)                      # the same for a Signal, in blocks
    det.present, det.z, det.p_value_bound, det.payload, det.model_id, det.per_second_z
    det.to_dict()                                         # JSON-ready
    generate_key_file(path)                               # new random key, mode 0600

``embed`` returns the same shape and dtype, clipped to [-1, 1], and never modifies its input.
``detect`` reports ``present`` when the Hoeffding/union bound puts the probability that audio
without this key's mark scores this high at ≤ ``ALPHA`` (1e-6) per file. Design, constants and
measured robustness: docs/watermark.md; the spec is spec/watermark.md §5.5–§6.

Module map: keys (WatermarkKey, HMAC streams) · layout (geometry, keyed cell roles) ·
coding (CRC-16, K=7 rate-1/3 convolutional code, soft Viterbi) · features (STFT, whitened
log-energy cells) · shaping (perceptual gain limits) · embed (closed-loop embedding) ·
analysis (alignment, channel estimate, soft bits) · scan (the offset search in blocks) ·
search (speed/tempo) · detect (bound, Detection) · detect_stream (detect_signal) ·
audio_io (soundfile/PyAV reading, spooling, atomic writing).
"""

from .audio_io import read_audio, write_audio_atomic
from .coding import make_payload, split_payload
from .detect import ALPHA, Detection, detect, p_value_bound, threshold_z
from .detect_stream import detect_signal
from .keys import (
                   ENV_KEY,
                   ENV_KEY_FILE,
                   WatermarkKey,
                   demo_key,
                   generate_key_file,
                   load_key,
                   read_key_file,
)
from .layout import DEFAULT_CONFIG, WatermarkConfig
from .stream import embed, embed_blocks, mark

__all__ = [
    "ALPHA", "DEFAULT_CONFIG", "Detection", "ENV_KEY", "ENV_KEY_FILE", "WatermarkConfig",
    "WatermarkKey", "demo_key", "detect", "detect_signal", "embed", "embed_blocks",
    "generate_key_file", "load_key", "make_payload", "mark", "p_value_bound", "read_audio",
    "read_key_file", "split_payload", "threshold_z", "write_audio_atomic",
]
