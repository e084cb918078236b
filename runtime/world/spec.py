"""The vocabulary of the procedural world: materials, ambiences, captions, prompts, seeds.

Everything here is data (frozen dataclasses and module constants) plus a few pure helpers.
Units: metres, seconds, metres per second; colours are sRGB uint8 triples.

The view (what a frame shows) is the square ``x in [0, 2] m``, ``y in [-0.25, 1.75] m``;
the floor is the line ``y = 0`` (the ground strip below it is visible), the two walls are
the left and right edges of the view. There is no ceiling: an object thrown up leaves the
top of the view and falls back in.

Materials (colour + shape on screen, timbre in the audio):

| material | shape | colour | e | modes (Hz × ratios) | decay | verb |
|---|---|---|---|---|---|---|
| metal | square | steel grey | 0.40 | 450–800 × (1, 2.76, 5.40, 8.93) | ~0.5 s | clangs |
| wood | wide rectangle | brown | 0.45 | 220–420 × (1, 2.57, 4.10) + knock | ~40 ms | knocks |
| glass | diamond | light cyan | 0.35 | 1800–2800 × (1, 2.32, 4.25) | ~0.2 s | clinks |
| rubber | circle | red | 0.75 | 80–150 × (1, 1.62) + dull click | ~25 ms | thuds |

(``e``: restitution; decay: time constant of the fundamental.)

Ambiences (background look → sound → the frequency band it owns for the prompt metric):

| ambience | look | sound | band (Hz) | noun |
|---|---|---|---|---|
| wind | blue sky gradient, drifting clouds | low-passed noise with slow gusts | 40–300 | wind |
| rain | dark slate grey, falling streaks | dense patter, strongest 6–7.8 kHz | 6000–7800 | rain |
| crickets | night sky with stars | pulsed 4.3–4.8 kHz chirps | 4000–5200 | crickets |
| none | plain light wall | very faint room tone (about −72 dBFS) | — | (not named) |

Captions name each sounding material once, in order of its first event, then the ambience
noun: ``"glass clinks, metal clangs, rain"``; a clip without ambience has no noun.

Seeds: training scenes use seeds in ``[0, HELD_OUT_SEED_BASE)``; evaluation uses seeds
``>= HELD_OUT_SEED_BASE`` (:func:`held_out_seeds`), so evaluation never sees a training scene.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType

SAMPLE_RATE = 16000  # Hz, the tiny model's rate
GRAVITY = 9.81  # m/s^2
VIEW_SIZE = 2.0  # m, the view is square
VIEW_LEFT = 0.0
VIEW_BOTTOM = -0.25  # the ground strip below the floor is visible
VIEW_TOP = VIEW_BOTTOM + VIEW_SIZE  # 1.75 m
FLOOR_Y = 0.0
WALL_LEFT = VIEW_LEFT
WALL_RIGHT = VIEW_LEFT + VIEW_SIZE  # 2.0 m
MIN_IMPACT_SPEED = 1.0  # m/s: slower contacts are silent (and a slower floor landing rests)
MIN_DURATION = 2.0  # s
MAX_DURATION = 10.0  # s

HELD_OUT_SEED_BASE = 10**6  # training seeds are [0, 10**6); evaluation seeds are >= 10**6


@dataclass(frozen=True)
class MaterialSpec:
    """How one material looks, moves and sounds."""

    name: str
    verb: str  # caption verb: "metal clangs"
    shape: str  # one of SHAPES
    colour: tuple[int, int, int]  # base sRGB; each object varies its shade by up to ±12 %
    half_width: tuple[float, float]  # m, range drawn per object
    half_height: tuple[float, float]  # m; equal to half_width for square and circle
    restitution: float  # floor and wall bounces
    # Modal synthesis: partial k rings at f0 * ratios[k] with amplitude amplitudes[k] and
    # decay time constant decay / ratios[k] ** decay_slope.
    f0: tuple[float, float]  # Hz, range drawn per object
    ratios: tuple[float, ...]
    amplitudes: tuple[float, ...]
    decay: tuple[float, float]  # s, time constant of the fundamental, range per object
    decay_slope: float
    click_gain: float  # contact noise burst, relative to the modes
    click_cutoff: float  # Hz, one-pole low-pass of the burst (brightness)
    click_ms: float  # decay time constant of the burst


SHAPES = ("square", "rectangle", "diamond", "circle")

MATERIALS: MappingProxyType[str, MaterialSpec] = MappingProxyType({
    "metal": MaterialSpec(
        "metal", "clangs", "square", (172, 178, 190), (0.11, 0.15), (0.11, 0.15), 0.40,
        f0=(450.0, 800.0), ratios=(1.0, 2.76, 5.40, 8.93), amplitudes=(1.0, 0.45, 0.3, 0.2),
        decay=(0.35, 0.6), decay_slope=0.35, click_gain=0.25, click_cutoff=6000.0, click_ms=1.0,
    ),
    "wood": MaterialSpec(
        "wood", "knocks", "rectangle", (139, 90, 43), (0.17, 0.22), (0.08, 0.10), 0.45,
        f0=(220.0, 420.0), ratios=(1.0, 2.57, 4.10), amplitudes=(1.0, 0.5, 0.3),
        decay=(0.03, 0.05), decay_slope=0.5, click_gain=0.6, click_cutoff=3000.0, click_ms=2.0,
    ),
    "glass": MaterialSpec(
        "glass", "clinks", "diamond", (160, 228, 238), (0.10, 0.13), (0.14, 0.18), 0.35,
        f0=(1800.0, 2800.0), ratios=(1.0, 2.32, 4.25), amplitudes=(1.0, 0.45, 0.2),
        decay=(0.15, 0.30), decay_slope=0.6, click_gain=0.15, click_cutoff=7000.0, click_ms=0.7,
    ),
    "rubber": MaterialSpec(
        "rubber", "thuds", "circle", (208, 42, 42), (0.09, 0.13), (0.09, 0.13), 0.75,
        f0=(80.0, 150.0), ratios=(1.0, 1.62), amplitudes=(1.0, 0.4),
        decay=(0.018, 0.035), decay_slope=0.3, click_gain=0.5, click_cutoff=1500.0,
        click_ms=2.5,
    ),
})
MATERIAL_NAMES = tuple(MATERIALS)


@dataclass(frozen=True)
class AmbienceSpec:
    """One background: its caption noun, its owned band and its level."""

    name: str
    noun: str | None  # None: not named in captions or prompts
    band: tuple[float, float] | None  # Hz, the band the prompt-control metric measures
    level_db: float  # RMS of the ambience stem, dBFS


AMBIENCES: MappingProxyType[str, AmbienceSpec] = MappingProxyType({
    "wind": AmbienceSpec("wind", "wind", (40.0, 300.0), -34.0),
    "rain": AmbienceSpec("rain", "rain", (6000.0, 7800.0), -36.0),
    "crickets": AmbienceSpec("crickets", "crickets", (4000.0, 5200.0), -36.0),
    "none": AmbienceSpec("none", None, None, -72.0),
})
AMBIENCE_NAMES = tuple(AMBIENCES)
NAMED_AMBIENCES = tuple(a for a, s in AMBIENCES.items() if s.noun is not None)


class PromptMode(str, Enum):
    """How the scene's ambience is named when prompting the model (prompt-control metric)."""

    POSITIVE = "positive"  # the prompt names the ambience; empty negative prompt
    NEGATIVE = "negative"  # the negative prompt names the ambience
    NEITHER = "neither"  # no prompt names it


def check_material(name: str) -> MaterialSpec:
    if name not in MATERIALS:
        raise ValueError(f"unknown material {name!r}; known: {', '.join(MATERIAL_NAMES)}")
    return MATERIALS[name]


def check_ambience(name: str) -> AmbienceSpec:
    if name not in AMBIENCES:
        raise ValueError(f"unknown ambience {name!r}; known: {', '.join(AMBIENCE_NAMES)}")
    return AMBIENCES[name]


def caption(materials: tuple[str, ...] | list[str], ambience: str) -> str:
    """``"glass clinks, metal clangs, rain"``: each material once, in the given order."""
    parts = []
    for m in dict.fromkeys(materials):  # ordered, unique
        spec = check_material(m)
        parts.append(f"{spec.name} {spec.verb}")
    noun = check_ambience(ambience).noun
    if noun is not None:
        parts.append(noun)
    return ", ".join(parts)


def prompts(materials: tuple[str, ...] | list[str], ambience: str, mode: PromptMode | str
            ) -> tuple[str, str]:
    """(prompt, negative prompt) naming ``ambience`` according to ``mode``.

    ``ambience`` must be one of :data:`NAMED_AMBIENCES`; it need not be the scene's own (to
    ask a wind clip for rain, say). The materials are always named in the prompt.
    """
    if ambience not in NAMED_AMBIENCES:
        raise ValueError(
            f"ambience {ambience!r} cannot be named in a prompt; known: {NAMED_AMBIENCES}"
        )
    try:
        mode = PromptMode(mode)
    except ValueError as e:
        known = ", ".join(m.value for m in PromptMode)
        raise ValueError(f"unknown prompt mode {mode!r}; known: {known}") from e
    plain = caption(materials, "none")
    noun = AMBIENCES[ambience].noun
    if mode is PromptMode.POSITIVE:
        return caption(materials, ambience), ""
    if mode is PromptMode.NEGATIVE:
        return plain, noun
    return plain, ""


def held_out_seeds(n: int, start: int = 0) -> range:
    """``n`` evaluation seeds, ``HELD_OUT_SEED_BASE + start`` onwards."""
    if n < 0 or start < 0:
        raise ValueError(f"n and start must be >= 0, got n={n}, start={start}")
    return range(HELD_OUT_SEED_BASE + start, HELD_OUT_SEED_BASE + start + n)


def is_held_out(seed: int) -> bool:
    return seed >= HELD_OUT_SEED_BASE
