"""Scenes of the procedural world: objects, physics, events and ground truth, from a seed.

``make_scene(seed, duration)`` draws 1–4 objects, each with a material (which fixes its shape,
colour family, size range, restitution and sound), and a role:

- ``air``: in view at t = 0, somewhere above the floor, thrown with a random velocity;
- ``drop``: falls in from above the top edge at a release time inside the clip (sometimes two
  objects are released within 60 ms of each other, which gives near or overlapping events);
- ``rest``: lies on the floor and never moves (a silent obstacle the others can hit).

The physics (:mod:`.physics`) gives exact contact instants. A contact is an **event**
(it makes a sound) when its normal speed is at least ``MIN_IMPACT_SPEED`` and its contact
point is in view; a body-body contact is one event per body (each sounds its own material).
The draw is repeated (same seed, next attempt) until the clip has 1 to 8 events, the first
no earlier than 0.1 s, so every scene has at least one event. Same seed and duration → the
identical scene.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .physics import Body, Segment, positions_at, simulate
from .spec import (
    AMBIENCE_NAMES,
    FLOOR_Y,
    MATERIAL_NAMES,
    MATERIALS,
    MAX_DURATION,
    MIN_DURATION,
    MIN_IMPACT_SPEED,
    VIEW_LEFT,
    VIEW_SIZE,
    VIEW_TOP,
    caption,
    check_ambience,
)

MAX_EVENTS = 8
MIN_FIRST_EVENT = 0.1  # s, onsets need some audio before them to be measured
_MAX_ATTEMPTS = 200
_SCENE_STREAM = 0x5CE7E  # domain separation of the seed streams
ROLES = ("air", "drop", "rest")


@dataclass(frozen=True)
class WorldObject:
    """One object: how it looks and sounds, and how it enters the scene."""

    material: str
    shape: str
    colour: tuple[int, int, int]
    half_width: float  # m
    half_height: float  # m
    role: str  # one of ROLES
    position: tuple[float, float]  # m, at release (t = 0 unless role == "drop")
    velocity: tuple[float, float]  # m/s, at release
    release_time: float  # s
    f0: float  # Hz, fundamental of its modes (one object always rings at one pitch)
    decay: float  # s, decay time constant of its fundamental

    @property
    def radius(self) -> float:
        """Collision radius (circle approximation of the shape)."""
        if self.shape == "circle":
            return self.half_width
        return 0.55 * (self.half_width + self.half_height) * (1.05 if self.shape == "square"
                                                              else 0.95)


@dataclass(frozen=True)
class Event:
    """A sounding contact."""

    time: float  # s, exact contact instant
    material: str
    speed: float  # m/s, normal impact speed
    kind: str  # "floor", "wall" or "object"
    object: int  # index into Scene.objects
    position: tuple[float, float]  # m, the contact point


@dataclass(frozen=True)
class Scene:
    seed: int
    duration: float  # s
    ambience: str
    objects: tuple[WorldObject, ...]
    tracks: tuple[tuple[Segment, ...], ...] = field(repr=False)  # per object
    events: tuple[Event, ...]  # sorted by time

    @property
    def event_times(self) -> np.ndarray:
        return np.array([e.time for e in self.events], dtype=np.float64)

    @property
    def materials(self) -> tuple[str, ...]:
        """Sounding materials, each once, in order of first event."""
        return tuple(dict.fromkeys(e.material for e in self.events))

    @property
    def caption(self) -> str:
        return caption(self.materials, self.ambience)

    def positions(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Object centres (N, K, 2) in m and presence flags (N, K) at ``times`` (N,)."""
        out = [positions_at(tr, times) for tr in self.tracks]
        return np.stack([p for p, _ in out], axis=1), np.stack([a for _, a in out], axis=1)

    def ground_truth(self) -> dict:
        """JSON-ready truth: event times (s), materials, speeds, ambience, caption."""
        return {
            "seed": self.seed,
            "duration": self.duration,
            "ambience": self.ambience,
            "caption": self.caption,
            "materials": list(self.materials),
            "events": [
                {"time": round(float(e.time), 6), "material": e.material,
                 "speed": round(float(e.speed), 4), "kind": e.kind, "object": e.object}
                for e in self.events
            ],
            "objects": [
                {"material": o.material, "shape": o.shape, "colour": list(o.colour),
                 "role": o.role, "release_time": round(o.release_time, 6)}
                for o in self.objects
            ],
        }


def make_scene(seed: int, duration: float = 8.0, ambience: str | None = None) -> Scene:
    """The scene of ``seed``: ``duration`` in [2, 10] s; ``ambience`` overrides the drawn one."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not MIN_DURATION <= duration <= MAX_DURATION:
        raise ValueError(
            f"duration must be in [{MIN_DURATION}, {MAX_DURATION}] s, got {duration}"
        )
    rng = np.random.default_rng([int(seed), _SCENE_STREAM])
    drawn = AMBIENCE_NAMES[rng.integers(len(AMBIENCE_NAMES))]
    ambience = drawn if ambience is None else check_ambience(ambience).name
    for _ in range(_MAX_ATTEMPTS):
        objects = _draw_objects(rng, duration)
        tracks, contacts = simulate(tuple(_body(o) for o in objects), duration)
        events = _events(objects, contacts)
        if 1 <= len(events) <= MAX_EVENTS and events[0].time >= MIN_FIRST_EVENT:
            return Scene(int(seed), float(duration), ambience, objects, tracks, events)
    raise RuntimeError(f"no scene with 1..{MAX_EVENTS} events for seed {seed}")  # not seen


def _draw_objects(rng: np.random.Generator, duration: float) -> tuple[WorldObject, ...]:
    n = int(rng.integers(1, 5))
    roles = [ROLES[k] for k in rng.choice(len(ROLES), size=n, p=[0.45, 0.35, 0.2])]
    if all(r == "rest" for r in roles):
        roles[0] = "drop"
    objects: list[WorldObject] = []
    for role in roles:
        material = MATERIAL_NAMES[rng.integers(len(MATERIAL_NAMES))]
        obj = _draw_object(rng, material, role, duration, objects)
        objects.append(obj)
    return tuple(objects)


def _draw_object(rng, material: str, role: str, duration: float, others: list[WorldObject]
                 ) -> WorldObject:
    spec = MATERIALS[material]
    w = float(rng.uniform(*spec.half_width))
    h = w if spec.shape in ("square", "circle") else float(rng.uniform(*spec.half_height))
    shade = rng.uniform(0.88, 1.12)
    colour = tuple(int(np.clip(round(c * shade), 0, 255)) for c in spec.colour)
    f0 = float(np.exp(rng.uniform(*np.log(spec.f0))))
    decay = float(rng.uniform(*spec.decay))
    release, vel = 0.0, (0.0, 0.0)
    lo, hi = VIEW_LEFT + w, VIEW_LEFT + VIEW_SIZE - w
    for _ in range(30):  # keep objects present at t = 0 apart
        x = float(rng.uniform(lo, hi))
        if role == "rest":
            y = FLOOR_Y + h
        elif role == "air":
            y = float(rng.uniform(FLOOR_Y + h + 0.15, 1.5))
            vel = (float(rng.uniform(-1.5, 1.5)), float(rng.uniform(-1.0, 2.5)))
        else:
            y = VIEW_TOP + h + 0.02
            vel = (float(rng.uniform(-1.0, 1.0)), float(rng.uniform(-1.5, 0.0)))
            pair = [o for o in others if o.role == "drop"]
            if pair and rng.random() < 0.35:  # a near-simultaneous drop: close events
                release = pair[-1].release_time + float(rng.uniform(0.0, 0.06))
            else:
                release = float(rng.uniform(0.0, max(duration - 1.2, 0.5)))
        r = 0.55 * (w + h)
        if all(np.hypot(x - o.position[0], y - o.position[1]) > r + o.radius + 0.02
               for o in others if o.release_time == release):
            break
    return WorldObject(material, spec.shape, colour, w, h, role, (x, y), vel, release, f0,
                       decay)


def _body(o: WorldObject) -> Body:
    area = 4.0 * o.half_width * o.half_height * (np.pi / 4 if o.shape == "circle" else 1.0)
    return Body(o.half_width, o.half_height, o.radius, float(area),
                MATERIALS[o.material].restitution, o.position, o.velocity, o.release_time,
                o.role == "rest")


def _events(objects: tuple[WorldObject, ...], contacts) -> tuple[Event, ...]:
    events = []
    for c in contacts:
        if c.speed < MIN_IMPACT_SPEED or not _in_view(c.point):
            continue
        for i in c.bodies:
            events.append(Event(c.time, objects[i].material, c.speed, c.kind, i, c.point))
    return tuple(sorted(events, key=lambda e: (e.time, e.object)))


def _in_view(point: tuple[float, float]) -> bool:
    x, y = point
    return VIEW_LEFT <= x <= VIEW_LEFT + VIEW_SIZE and y <= VIEW_TOP - 0.05
