"""Reference watermark outputs of the in-memory code (run once at 08ef24a/6a8f170 before streaming)."""
import hashlib, numpy as np, sys
from v2a_runtime.oracles import clips
from v2a_runtime.watermark import WatermarkKey, embed, detect, make_payload
KEY = WatermarkKey.from_secret(bytes(range(32)))
PAYLOAD = make_payload(7, 0x00BEEF)
def hosts():
    return {
        "m16": (clips.make_clip("foley", 21, 16000, 9.0), 16000),
        "s44": (np.stack([clips.make_clip("music", 22, 44100, 9.0),
                           0.5 * clips.make_clip("ambience", 23, 44100, 9.0)]), 44100),
    }
out = {}
for name, (x, sr) in hosts().items():
    y = embed(x, sr, KEY, PAYLOAD)
    out[name + "_sha"] = np.frombuffer(hashlib.sha256(y.tobytes()).digest(), np.uint8)
    out[name + "_strided"] = y.reshape(-1)[::53].copy()
    d = detect(y, sr, KEY, search="offset")
    out[name + "_z"] = np.array([d.z]); out[name + "_payload"] = np.array([d.payload])
    out[name + "_per_second"] = np.array(d.per_second_z)
    out[name + "_offset"] = np.array([d.offset_samples])
    print(name, d.z, hex(d.payload), d.offset_samples, y.dtype, y.shape)
np.savez_compressed(sys.argv[1], **out)
