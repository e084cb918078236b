"""The procedural audio-visual world: one import for scenes, frames, video, audio and truth.

A seeded 2-D world of objects that fall, bounce and collide in front of a background; each
visible contact makes an impact sound whose timbre follows the object's material (shown by
its colour and shape) and whose loudness follows the impact speed; the background's look
selects an ambience. Everything is torch-free (numpy, scipy; PyAV only to write video).

    from v2a_runtime import world
    scene = world.make_scene(world.HELD_OUT_SEED_BASE + 7, duration=8.0)
    clip = world.render_frames(scene, world.decoded_times(scene.duration, 8.0), size=64)
    sync = world.render_frames(scene, world.decoded_times(scene.duration, 25.0), size=64)
    audio = world.render_audio(scene)            # float32 (W,), 16 kHz
    truth = scene.ground_truth()                 # JSON-ready: events, ambience, caption
    world.write_video(scene, "scene.mp4")        # silent H.264, 256 px, 25 fps

Modules: :mod:`.spec` (materials, ambiences, vocabulary, seeds),
:mod:`.physics` (continuous-time contacts), :mod:`.scene` (scene drawing, events,
ground truth), :mod:`.render` (frames, video), :mod:`.sound` (synthesis),
:mod:`.metrics` (evaluation).
"""

from .render import decoded_times, frame_times, render_frames, write_video
from .scene import Event, Scene, WorldObject, make_scene
from .sound import AudioStems, render_audio, render_stems
from .spec import (
    AMBIENCE_NAMES,
    AMBIENCES,
    HELD_OUT_SEED_BASE,
    MATERIAL_NAMES,
    MATERIALS,
    NAMED_AMBIENCES,
    SAMPLE_RATE,
    PromptMode,
    caption,
    held_out_seeds,
    is_held_out,
    prompts,
)

__all__ = [
    "AMBIENCES",
    "AMBIENCE_NAMES",
    "AudioStems",
    "Event",
    "HELD_OUT_SEED_BASE",
    "MATERIALS",
    "MATERIAL_NAMES",
    "NAMED_AMBIENCES",
    "PromptMode",
    "SAMPLE_RATE",
    "Scene",
    "WorldObject",
    "caption",
    "decoded_times",
    "frame_times",
    "held_out_seeds",
    "is_held_out",
    "make_scene",
    "prompts",
    "render_audio",
    "render_frames",
    "render_stems",
    "write_video",
]
