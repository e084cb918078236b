"""Frames and silent video of a scene: vectorised numpy at any size and any times.

``render_frames(scene, times, size)`` draws the view (``x in [0, 2] m``,
``y in [-0.25, 1.75] m``) at the exact instants ``times`` (seconds), so a trainer renders
the 8 fps semantic stream and the 25 fps sync stream directly at model resolution, with no
codec (``decoded_times`` gives the instants the runtime's decoder would show for each stream
of a 25 fps video, so training matches inference). Pixels are sampled at their centres;
every edge is anti-aliased by a signed distance field (coverage ``clip(0.5 - d / pixel, 0,
1)``), so sub-pixel motion is visible at 64 px.

Layers, back to front:

1. the background of the ambience (sky above the floor, ground strip below it):
   wind — blue sky gradient, grass, white clouds drifting sideways;
   rain — slate grey sky, wet dark ground, light slanted streaks falling fast;
   crickets — dark blue night, a pale moon, twinkling stars, dark grass;
   none — plain light wall with a skirting line, light grey floor;
2. a soft shadow under each object on the floor, darker as the object gets lower;
3. the objects: a fill in the object's colour with a dark outline (15 mm, at least 0.6 px).

Per-scene variation of the background (cloud, star and streak layout, moon position, a
±5 % tint) comes from a generator seeded with the scene seed.

``write_video`` encodes the frames at 25 fps as H.264 (libx264, yuv420p; MPEG-4 Part 2 if
this FFmpeg build has no H.264 encoder) with PyAV, through a temporary file renamed at the
end, so an interrupted write leaves no partial file.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from types import MappingProxyType

import numpy as np

from ..media.files import atomic_output
from .scene import Scene
from .spec import FLOOR_Y, VIEW_LEFT, VIEW_SIZE, VIEW_TOP

_VISUAL_STREAM = 0x7151B1E
_CHUNK = 32  # frames rendered together (memory bound at 256 px)
OUTLINE_M = 0.015  # m, dark outline of the objects (at least 0.6 px)
MIN_SIZE, MAX_SIZE = 16, 1024
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov")


def render_frames(scene: Scene, times: np.ndarray, size: int = 64) -> np.ndarray:
    """uint8 RGB frames (N, size, size, 3) of ``scene`` at ``times`` (N,) in seconds."""
    if not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be an integer in [{MIN_SIZE}, {MAX_SIZE}], got {size!r}")
    times = np.atleast_1d(np.asarray(times, dtype=np.float64))
    if times.ndim != 1:
        raise ValueError(f"times must be 1-D (N,), got shape {times.shape}")
    look = _Look.draw(scene.seed, scene.ambience, size)
    out = np.empty((len(times), size, size, 3), dtype=np.uint8)
    for a in range(0, len(times), _CHUNK):
        t = times[a: a + _CHUNK]
        img = look.background(t)  # (n, S, S, 3) float32 in [0, 1]
        _draw_objects(img, scene, t, look)
        out[a: a + _CHUNK] = np.clip(img * 255.0 + 0.5, 0.0, 255.0).astype(np.uint8)
    return out


def frame_times(duration: float, fps: float) -> np.ndarray:
    """Instants of the ``int(fps * duration)`` frames of a stream at ``fps``: i / fps."""
    return np.arange(int(fps * duration + 1e-9)) / fps


def decoded_times(duration: float, fps: float, video_fps: float = 25.0) -> np.ndarray:
    """Instants of the frames the runtime's decoder picks for a ``fps`` stream from a video
    written at ``video_fps`` (``write_video``): sample-and-hold, target k / fps gets the first
    video frame at or after it (within 1 µs), as in ``v2a_runtime.media.read_frames``.

    Render the training streams at these times so they match what inference decodes: for the
    8 fps CLIP stream of a 25 fps video, frame k shows ``ceil(25 k / 8) / 25``, up to 40 ms
    after ``k / 8``.
    """
    k = np.arange(int(fps * duration + 1e-9))
    return np.ceil((k / fps - 1e-6) * video_fps) / video_fps


def write_video(scene: Scene, path: str | Path, size: int = 256, fps: int = 25) -> Path:
    """Encode the silent video of ``scene`` to ``path`` (MP4/MKV/MOV by extension)."""
    import av  # PyAV bundles FFmpeg; imported here so the module imports without it

    if size % 2:
        raise ValueError(f"size must be even for yuv420p video, got {size}")
    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"video path {path} must end in one of {', '.join(VIDEO_SUFFIXES)}")
    times = frame_times(scene.duration, fps)
    # a hidden sibling with the same suffix (the container format follows it), renamed at the end
    with atomic_output(path) as tmp, av.open(str(tmp), mode="w") as container:
        stream = container.add_stream(_video_codec(av), rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        if stream.codec_context.name == "libx264":
            stream.options = {"crf": "18", "preset": "veryfast"}
        for a in range(0, len(times), _CHUNK):
            frames = render_frames(scene, times[a: a + _CHUNK], size)
            for i, rgb in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts = a + i
                frame.time_base = Fraction(1, fps)
                container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def _video_codec(av) -> str:
    for name in ("libx264", "h264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - PyAV raises several types for a missing codec
            continue
    raise RuntimeError("this FFmpeg build (PyAV) has no H.264 or MPEG-4 encoder")


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """World coordinates of pixel centres: x (S,), y (S,) (row 0 at the top)."""
    px = VIEW_SIZE / size
    x = VIEW_LEFT + (np.arange(size) + 0.5) * px
    y = VIEW_TOP - (np.arange(size) + 0.5) * px
    return x.astype(np.float32), y.astype(np.float32)


class _Look:
    """Per-scene background layout; ``background(times)`` renders it (n, S, S, 3)."""

    def __init__(self, ambience: str, size: int, rng: np.random.Generator):
        self.ambience = ambience
        self.size = size
        self.px = VIEW_SIZE / size
        self.x, self.y = _grid(size)
        self.tint = rng.uniform(0.95, 1.05, 3).astype(np.float32)
        self.rng_layout = {
            "clouds": rng.uniform(size=(4, 5)),
            "stars": rng.uniform(size=(70, 4)),
            "lanes": rng.uniform(size=(64, 2)),
            "moon": rng.uniform(size=2),
        }
        self.static = self._static()  # (S, S, 3)
        self.star_fields = self._star_fields() if ambience == "crickets" else []

    @classmethod
    def draw(cls, seed: int, ambience: str, size: int) -> _Look:
        return cls(ambience, size, np.random.default_rng([seed, _VISUAL_STREAM]))

    def _static(self) -> np.ndarray:
        top, horizon, ground = _PALETTE[self.ambience]
        y = self.y[:, None, None]  # (S, 1, 1)
        mix = np.clip((VIEW_TOP - y) / (VIEW_TOP - FLOOR_Y), 0.0, 1.0)
        sky = np.asarray(top) * (1 - mix) + np.asarray(horizon) * mix  # (S, 1, 3)
        img = np.where(y >= FLOOR_Y, sky, np.asarray(ground))  # (S, 1, 3)
        img = np.broadcast_to(img, (self.size, self.size, 3)).astype(np.float32).copy()
        edge = np.clip(1.0 - np.abs(self.y - FLOOR_Y) / max(self.px, 0.006), 0.0, 1.0)
        img *= 1.0 - 0.25 * edge[:, None, None]  # a darker floor line
        if self.ambience == "none":  # skirting board just above the floor
            skirt = ((self.y > FLOOR_Y) & (self.y < FLOOR_Y + 0.06)).astype(np.float32)
            img = img * (1 - 0.5 * skirt[:, None, None]) + 0.5 * skirt[:, None, None]
        if self.ambience == "crickets":
            mx, my = self.rng_layout["moon"]
            d = np.hypot(self.x[None, :] - (0.3 + 1.4 * mx), self.y[:, None] - (1.3 + 0.3 * my))
            a = np.clip(0.5 - (d - 0.12) / self.px, 0.0, 1.0)[..., None]
            img = img * (1 - a) + np.array([0.93, 0.93, 0.82], np.float32) * a
        return img * self.tint

    def background(self, times: np.ndarray) -> np.ndarray:
        n = len(times)
        img = np.repeat(self.static[None], n, axis=0)  # (n, S, S, 3)
        if self.ambience == "wind":
            self._clouds(img, times)
        elif self.ambience == "rain":
            self._rain(img, times)
        elif self.ambience == "crickets":
            self._stars(img, times)
        return img

    def _clouds(self, img: np.ndarray, times: np.ndarray) -> None:
        span = VIEW_SIZE + 1.2
        gx, gy = [], []
        for cx, cy, speed, scale, _ in self.rng_layout["clouds"]:
            x0 = (cx * span + (0.1 + 0.25 * speed) * times) % span - 0.6  # (n,)
            y0 = 1.1 + 0.5 * cy
            sx, sy = 0.18 + 0.12 * scale, 0.06 + 0.03 * scale
            for dx, dy, k in ((0.0, 0.0, 1.0), (-0.6, -0.3, 0.7), (0.6, -0.2, 0.8)):
                u = (self.x[None, :] - x0[:, None] - dx * sx) / (k * sx)  # (n, S)
                gx.append(np.exp(-0.5 * u * u))
                gy.append(np.exp(-0.5 * ((self.y - y0 - dy * sy) / (k * sy)) ** 2))
        # each puff is separable: alpha = sum_p gy_p(row) gx_p(frame, col)
        alpha = np.einsum("pr,pnc->nrc", np.array(gy, np.float32), np.array(gx, np.float32))
        a = (0.9 * np.clip(alpha, 0.0, 1.0))[..., None]  # (n, S, S, 1)
        img *= 1 - a
        img += a * np.array([0.97, 0.97, 0.98], np.float32)

    def _rain(self, img: np.ndarray, times: np.ndarray) -> None:
        lanes = self.rng_layout["lanes"]  # (L, 2): phase, speed
        n_lanes = len(lanes)
        u = self.x[None, :] + 0.2 * (self.y[:, None] - FLOOR_Y)  # (S, S) slanted coordinate
        pos = (u - VIEW_LEFT) / (VIEW_SIZE + 0.4) * n_lanes  # lane coordinate
        lane = np.clip(np.floor(pos).astype(int), 0, n_lanes - 1)
        half = max(0.6 * self.px, 0.004) / (VIEW_SIZE + 0.4) * n_lanes
        across = np.clip(1.0 - np.abs(pos - lane - 0.5) / half, 0.0, 1.0)  # (S, S)
        phase, speed = lanes[lane, 0], 6.0 + 3.0 * lanes[lane, 1]  # (S, S)
        period = 0.45
        along = (self.y[:, None] + speed[None] * times[:, None, None]) / period + phase  # (n,S,S)
        frac = along - np.floor(along)
        streak = np.clip((0.18 - frac) / 0.04, 0.0, 1.0) * np.clip(frac / 0.04, 0.0, 1.0)
        a = (0.45 * streak * across * (self.y[:, None] > FLOOR_Y))[..., None]  # (n, S, S, 1)
        img *= 1 - a
        img += a * np.array([0.78, 0.82, 0.88], np.float32)

    def _stars(self, img: np.ndarray, times: np.ndarray) -> None:
        for group, field in enumerate(self.star_fields):
            twinkle = 0.65 + 0.35 * np.sin(2 * np.pi * (0.7 + 0.4 * group) * times + group)
            a = np.clip(field[None] * twinkle[:, None, None], 0.0, 1.0)[..., None]
            img *= 1 - a
            img += a * np.array([1.0, 1.0, 0.9], np.float32)

    def _star_fields(self) -> list[np.ndarray]:
        """Two static star images (S, S) that twinkle out of phase."""
        stars = self.rng_layout["stars"]
        sigma = max(0.5 * self.px, 0.006)
        fields = []
        for group in (0, 1):
            sel = stars[(stars[:, 3] >= 0.5) == bool(group)]
            gx = np.exp(-0.5 * ((self.x[None, :] - (VIEW_LEFT + VIEW_SIZE * sel[:, :1])) / sigma)
                        ** 2)  # (m, S)
            gy = np.exp(-0.5 * ((self.y[None, :] - (0.35 + 1.35 * sel[:, 1:2])) / sigma)
                        ** 2)  # (m, S)
            fields.append(np.einsum("mr,mc->rc", gy * (0.5 + 0.5 * sel[:, 2:3]), gx)
                          .astype(np.float32))
        return fields


_PALETTE = MappingProxyType({  # (top of the sky, horizon, ground), 0..1 sRGB values
    "wind": ((0.42, 0.64, 0.90), (0.78, 0.87, 0.97), (0.33, 0.55, 0.26)),
    "rain": ((0.28, 0.31, 0.36), (0.42, 0.45, 0.50), (0.20, 0.22, 0.25)),
    "crickets": ((0.02, 0.03, 0.10), (0.09, 0.11, 0.24), (0.04, 0.10, 0.05)),
    "none": ((0.89, 0.86, 0.79), (0.86, 0.83, 0.76), (0.66, 0.65, 0.63)),
})


def _draw_objects(img: np.ndarray, scene: Scene, times: np.ndarray, look: _Look) -> None:
    """Composite shadows, then objects, into ``img`` (n, S, S, 3), a pixel window each."""
    pos, active = scene.positions(times)  # (n, K, 2), (n, K)
    x, y, px = look.x, look.y, look.px
    floor_rows = _rows(y, FLOOR_Y - 0.09, FLOOR_Y + 0.02)
    gy = ((y[floor_rows] - FLOOR_Y + 0.01) / 0.035)[:, None]  # (r, 1)
    for k, obj in enumerate(scene.objects):  # shadows first: they never cover an object
        for i in np.flatnonzero(active[:, k]):
            cx, cy = pos[i, k]
            height = max(cy - obj.half_height - FLOOR_Y, 0.0)
            sx = obj.half_width * (1.0 + 0.5 * height)
            cols = _rows(-x, -(cx + sx), -(cx - sx))  # x ascends with the column
            gx = (x[cols] - cx) / sx  # (c,)
            shadow = 0.45 * np.exp(-height / 0.5) * np.exp(-0.5 * gy * gy) * (1.0 - gx * gx)
            img[i, floor_rows, cols] *= (1.0 - np.clip(shadow, 0.0, 1.0))[..., None]
    outline = max(OUTLINE_M, 0.6 * px)
    for k, obj in enumerate(scene.objects):
        colour = np.asarray(obj.colour, np.float32) / 255.0
        for i in np.flatnonzero(active[:, k]):
            cx, cy = pos[i, k]
            m = 2.0 * px
            rows = _rows(y, cy - obj.half_height - m, cy + obj.half_height + m)
            cols = _rows(-x, -(cx + obj.half_width + m), -(cx - obj.half_width - m))
            d = _sdf(obj.shape, (x[cols] - cx)[None, :], (y[rows] - cy)[:, None],
                     obj.half_width, obj.half_height)  # (r, c) metres, < 0 inside
            cover = np.clip(0.5 - d / px, 0.0, 1.0)[..., None]  # (r, c, 1)
            inner = np.clip(0.5 - (d + outline) / px, 0.0, 1.0)[..., None]  # 0 on the outline
            fill = colour * (0.45 + 0.55 * inner)  # (r, c, 3)
            patch = img[i, rows, cols]
            img[i, rows, cols] = patch * (1.0 - cover) + fill * cover


def _rows(coord: np.ndarray, lo: float, hi: float) -> slice:
    """Slice of the indices whose ``coord`` (descending) lies in [lo, hi]."""
    start = int(np.searchsorted(-coord, -hi, side="left"))
    stop = int(np.searchsorted(-coord, -lo, side="right"))
    return slice(start, max(stop, start))


def _sdf(shape: str, dx: np.ndarray, dy: np.ndarray, w: float, h: float) -> np.ndarray:
    """Signed distance (metres, < 0 inside) to the shape centred at the origin."""
    if shape == "circle":
        return np.sqrt(dx * dx + dy * dy) - w
    if shape in ("square", "rectangle"):
        qx, qy = np.abs(dx) - w, np.abs(dy) - h
        outside = np.sqrt(np.maximum(qx, 0.0) ** 2 + np.maximum(qy, 0.0) ** 2)
        return outside + np.minimum(np.maximum(qx, qy), 0.0)
    if shape == "diamond":  # distance to the nearest edge line |x|/w + |y|/h = 1
        return (np.abs(dx) / w + np.abs(dy) / h - 1.0) * (w * h / np.hypot(w, h))
    raise ValueError(f"unknown shape {shape!r}; known: circle, square, rectangle, diamond")
