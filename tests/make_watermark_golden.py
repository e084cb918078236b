"""Write ``tests/data/watermark_golden.npz``: the whole-clip embedder's output on two hosts.

Made once with the in-memory embedder before it was replaced by the block-wise one (issue 21,
at 6a8f170), so ``tests/test_long_inputs.py`` can hold the block-wise embedder to it:
``python tests/make_watermark_golden.py tests/data/watermark_golden.npz``. Rerunning it now
records the block-wise embedder instead (only for a deliberate change of the mark).
"""

from __future__ import annotations

import hashlib
import sys

import numpy as np
from v2a_runtime.oracles import clips
from v2a_runtime.watermark import WatermarkKey, detect, embed, make_payload

KEY = WatermarkKey.from_secret(bytes(range(32)))
PAYLOAD = make_payload(7, 0x00BEEF)


def hosts() -> dict[str, tuple[np.ndarray, int]]:
    """9 s of foley at 16 kHz mono, 9 s of music + ambience at 44.1 kHz stereo."""
    return {
        "m16": (clips.make_clip("foley", 21, 16000, 9.0), 16000),
        "s44": (np.stack([clips.make_clip("music", 22, 44100, 9.0),
                          0.5 * clips.make_clip("ambience", 23, 44100, 9.0)]), 44100),
    }  # fmt: skip


def main(path: str) -> None:
    out = {}
    for name, (x, sr) in hosts().items():
        y = embed(x, sr, KEY, PAYLOAD)
        out[name + "_sha"] = np.frombuffer(hashlib.sha256(y.tobytes()).digest(), np.uint8)
        out[name + "_strided"] = y.reshape(-1)[::53].copy()
        d = detect(y, sr, KEY, search="offset")
        out[name + "_z"] = np.array([d.z])
        out[name + "_payload"] = np.array([d.payload])
        out[name + "_per_second"] = np.array(d.per_second_z)
        out[name + "_offset"] = np.array([d.offset_samples])
        print(name, d.z, hex(d.payload), d.offset_samples, y.dtype, y.shape)
    np.savez_compressed(path, **out)


if __name__ == "__main__":
    main(sys.argv[1])
