"""Video in, audio out: PyAV decoding of the two frame streams, audio files and muxing.

API (all errors a user can cause are :class:`MediaError`, a ``ValueError`` with a one-line
message naming the file and the problem; programming errors such as a bad array shape are plain
``ValueError``/``TypeError``)::

    probe(path) -> VideoInfo
        container, duration, display width/height (after rotation), rotation, average fps,
        codecs, has_audio. Decodes one frame.
    read_frames(path, *, start=0.0, duration=None, clip_fps=8.0, clip_size=384,
                sync_fps=25.0, sync_size=224) -> Frames
        Frames.clip uint8 (F, Hc, Hc, 3), Frames.sync uint8 (Fs, Hs, Hs, 3), .start, .duration;
        one pass, sample-and-hold at exact target times (see ``decode``), clamped to the video
        like MMAudio; shorter than one sync segment (0.64 s) -> MediaError.
    sync_segments(sync) -> (S, 16, Hs, Hs, 3) view, stride 8
    write_audio(path, audio, sample_rate, *, overwrite=False, title=...) -> None
        .flac / .wav, 16-bit, atomic; ``audio`` an array or a ``v2a_runtime.signals.Track``
        (written block by block).
    mux(video_path, out_path, tracks, sample_rate, *, start=0.0, keep_original_audio=False,
        title="v2a generated", overwrite=False) -> None
        video packets copied, audio encoded per container (see ``mux``), atomic; tracks are
        arrays or Tracks (encoded block by block as the video packets are copied).
    check_output(path, *, input_path=None, overwrite=False, allowed=...) -> Path
        the output-path rules (extension, not the input, directory exists and is writable, no
        overwrite without ``overwrite``), for a CLI to call before it generates anything.
    preflight(video_path, out_path, *, tracks=1, sample_rate=16000,
              keep_original_audio=False, overwrite=False) -> Path
        ``check_output`` plus a one-second dry run of ``mux`` into a scratch file: codec and
        container compatibility and bitstream problems show before any work.

Output extensions: .mp4 .m4v .mov (AAC), .mkv .webm (Opus), .avi (16-bit PCM) for ``mux``;
.flac .wav for ``write_audio``.

PyAV and soundfile are imported inside the functions that call them, so ``Frames``,
``sync_segments`` and the rest of the runtime import on a machine without them (the GPU kit
runs the pipeline on decoded frames there, docs/gpu.md).
"""

from .audio import write_audio
from .decode import Frames, read_frames, sync_segments
from .files import AUDIO_FORMATS, VIDEO_CONTAINERS, MediaError, check_output
from .mux import mux, preflight
from .probe import VideoInfo, probe

__all__ = [
    "AUDIO_FORMATS",
    "VIDEO_CONTAINERS",
    "Frames",
    "MediaError",
    "VideoInfo",
    "check_output",
    "mux",
    "preflight",
    "probe",
    "read_frames",
    "sync_segments",
    "write_audio",
]
