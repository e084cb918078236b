"""``v2a watermark``: embed and verify the keyed audio watermark from the command line.

    v2a watermark embed IN OUT [--key-file F] [--payload HEX | --model-id N --generation-id N]
    v2a watermark verify FILE... [--key-file F] [--search auto|offset|full] [--null-keys N]
                                 [--bundle DIR]... [--json]
    v2a watermark keygen PATH

``verify`` reads audio files (anything soundfile reads) and every audio track of videos and
other media (PyAV), and reports each track (``FILE [track k/n]`` when there are several); it
decodes one track at a time into a temporary file and analyses it block by block
(``detect_signal``), so its memory does not grow with the length of the file. A
file counts as marked when any of its tracks is (a muxed video may keep an unmarked original
track). Exit status: 0 every file is marked, 1 some file is not marked, 2 an error (bad input
or key), which is one ``error:`` line on stderr, never a traceback. ``--json`` prints one JSON
object per track (JSON lines) with the ``Detection`` fields, ``track`` and ``tracks``. With
``--bundle DIR`` (repeatable) each marked track also names the given bundles whose weights'
fingerprint (``Manifest.mark_id``, the payload's model id) matches: which bundle made it (two
bundles share an 8-bit id 1 time in 256; then both are named).
``embed`` writes WAV/FLAC/OGG atomically (temporary file + rename) after checking that the
mark can be read back from the written file (silence, a pure tone or a lossy codec can make
it unrecoverable: then nothing is written and the exit status is 2); inputs are only read.
It works block by block (the decoded input waits in a temporary file next to OUT), so its
memory does not grow with the length of the file; the read-back check decodes the written
file 30 s at a time (``READBACK``; the whole file when shorter) and passes at the first excerpt
that yields the payload.
"""

from __future__ import annotations

import json
import secrets
import sys
import tempfile
from pathlib import Path

import click
import numpy as np

from ..signals import Track
from ..watermark import (
    Detection,
    WatermarkKey,
    detect,
    generate_key_file,
    load_key,
    make_payload,
    mark,
    split_payload,
    write_audio_atomic,
)
from ..watermark.audio_io import audio_subtype, count_audio_tracks, spool_audio
from ..watermark.detect_stream import detect_signal

EXIT_MARKED, EXIT_NOT_MARKED, EXIT_ERROR = 0, 1, 2
READBACK = 30  # seconds of the written file per read-back excerpt (embed's check)
KEY_HELP = "key file (64 hex digits); default: $V2A_WATERMARK_KEY, then $V2A_WATERMARK_KEY_FILE"


def _fail(message: str) -> None:
    click.echo(f"error: {' '.join(message.split())}", err=True)
    sys.exit(EXIT_ERROR)


def _key(key_file: str | None) -> WatermarkKey:
    try:
        key = load_key(key_file)
    except ValueError as e:
        _fail(str(e))
    if key.is_demo:
        click.echo("warning: using the PUBLIC DEMO watermark key (anyone can verify or forge "
                   "it); set V2A_WATERMARK_KEY or pass --key-file", err=True)
    return key


def _payload(payload_hex: str | None, model_id: int | None, generation_id: int | None) -> int:
    if payload_hex is not None:
        if model_id is not None or generation_id is not None:
            _fail("give either --payload or --model-id/--generation-id, not both")
        text = payload_hex.lower().removeprefix("0x")
        if not 1 <= len(text) <= 8 or any(c not in "0123456789abcdef" for c in text):
            _fail(f"--payload must be 1-8 hex digits (32 bits), got {payload_hex!r}")
        return int(text, 16)
    gid = secrets.randbelow(1 << 24) if generation_id is None else generation_id
    try:
        return make_payload(model_id or 0, gid)
    except ValueError as e:
        _fail(str(e))


@click.group("watermark")
def watermark() -> None:
    """Embed and verify the keyed audio watermark."""


@watermark.command("embed")
@click.argument("src", metavar="IN", type=click.Path(dir_okay=False))
@click.argument("dst", metavar="OUT", type=click.Path(dir_okay=False))
@click.option("--key-file", type=click.Path(dir_okay=False), help=KEY_HELP)
@click.option("--payload", "payload_hex", metavar="HEX", help="32-bit payload as hex")
@click.option("--model-id", type=int, help="payload model id (0-255); default 0")
@click.option("--generation-id", type=int, help="payload generation id (24 bits); default random")
@click.option("--force", is_flag=True, help="overwrite OUT if it exists")
def embed_cmd(src, dst, key_file, payload_hex, model_id, generation_id, force) -> None:
    """Watermark the audio of IN (audio file or the audio track of a video) into OUT
    (.wav, .flac or .ogg)."""
    src_p, dst_p = Path(src), Path(dst)
    if dst_p.exists() and dst_p.resolve() == src_p.resolve():
        _fail(f"{dst}: OUT must differ from IN (the input is never modified)")
    if dst_p.exists() and not force:
        _fail(f"{dst}: exists; pass --force to overwrite")
    if not dst_p.parent.is_dir():
        _fail(f"{dst}: directory {dst_p.parent} does not exist")
    payload = _payload(payload_hex, model_id, generation_id)
    key = _key(key_file)
    def recoverable(written: Path) -> None:
        d = _read_back(written, key)
        if not (d.present and d.crc_ok and d.payload == payload):
            found = "not detected" if not d.present else "detected but its payload unreadable"
            raise ValueError(
                f"{dst}: the mark would not be recoverable from the output ({found}, z "
                f"{d.z:.1f}): the audio is too quiet, too simple (a pure tone) or the format "
                "too lossy to carry it; nothing was written"
            )

    try:  # block by block: the input waits in a temporary file next to OUT, not in memory
        with spool_audio(src_p, dst_p.parent) as audio:
            marked = mark(audio, key, payload)
            subtype = audio_subtype(src_p) if src_p.suffix.lower() == dst_p.suffix.lower() else None
            track = Track(audio.channels, audio.length,
                          lambda: (b.astype(np.float32) for b in marked.blocks()))  # fmt: skip
            write_audio_atomic(dst_p, track, audio.rate, subtype=subtype, check=recoverable)
    except (ValueError, OSError) as e:
        _fail(str(e))
    model, gen = split_payload(payload)
    click.echo(f"{dst}: embedded payload {payload:08x} (model {model}, generation {gen}) "
               f"with key {key.key_id}; verified in the written file")


def _read_back(written: Path, key: WatermarkKey) -> Detection:
    """The mark found in ``written``, READBACK seconds at a time (bounded memory): the first
    excerpt whose payload reads back, else the strongest excerpt's detection."""
    import soundfile as sf

    best = None
    with sf.SoundFile(str(written)) as f:
        step = READBACK * f.samplerate
        for start in range(0, max(f.frames, 1), step):
            f.seek(start)
            excerpt = f.read(step, dtype="float32", always_2d=True).T  # (channels, n)
            if excerpt.shape[1] < f.samplerate and start > 0:
                break  # a short tail after a full excerpt: too little to judge alone
            d = detect(excerpt, f.samplerate, key)
            if d.present and d.crc_ok:
                return d
            best = d if best is None or d.z > best.z else best
    return best


def _line(path: str, d: Detection) -> str:
    if not d.present:
        return f"{path}: not marked (z {d.z:.1f} < {d.threshold_z:.2f}, key {d.key_id})"
    where = "" if d.speed == 1.0 and d.tempo == 1.0 else (
        f", speed {d.speed:.3f}" if d.speed != 1.0 else f", tempo {d.tempo:.3f}")
    if d.crc_ok:
        msg = f"payload {d.payload:08x} (model {d.model_id}, generation {d.generation_id})"
    else:
        msg = "payload unreadable (CRC mismatch)"
    marked = sum(z >= 3.0 for z in d.per_second_z)
    if d.p_value_empirical is not None:
        where += f", empirical p {d.p_value_empirical:.1e}"
    return (f"{path}: MARKED (z {d.z:.1f} ≥ {d.threshold_z:.2f}, p ≤ {d.p_value_bound:.1e}"
            f"{where}, key {d.key_id}) {msg}; {marked}/{len(d.per_second_z)} s with z ≥ 3")


@watermark.command("verify")
@click.argument("files", metavar="FILE...", nargs=-1, required=True)
@click.option("--key-file", type=click.Path(dir_okay=False), help=KEY_HELP)
@click.option("--search", type=click.Choice(["auto", "offset", "full"]), default="auto",
              show_default=True, help="auto: speed/tempo search only if the offset search fails")
@click.option("--null-keys", type=click.IntRange(0, 100000), default=0,
              help="also rank z among N random keys (empirical p-value cross-check)")
@click.option("--bundle", "bundles", multiple=True, type=click.Path(file_okay=False),
              help="a bundle directory that may have made FILE (repeatable): name the match")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per track")
def verify_cmd(files, key_file, search, null_keys, bundles, as_json) -> None:
    """Check FILE... (audio files or videos) for the watermark of the key.

    Exit status 0 if all are marked, 1 if any is not, 2 on any error."""
    key = _key(key_file)
    ids = _bundle_ids(bundles)
    status = EXIT_MARKED
    for path in files:
        try:
            found = _verify_tracks(path, key, search, null_keys)
        except (ValueError, OSError) as e:
            message = " ".join(str(e).split())
            if as_json:
                click.echo(json.dumps({"file": path, "error": message}))
            click.echo(f"error: {message}", err=True)
            status = EXIT_ERROR
            continue
        for k, d in enumerate(found):
            name = path if len(found) == 1 else f"{path} [track {k + 1}/{len(found)}]"
            made_by = [b for b, i in ids.items() if d.crc_ok and d.model_id == i]
            if as_json:
                extra = {"bundles": made_by} if ids else {}
                click.echo(json.dumps({"file": path, "track": k + 1, "tracks": len(found),
                                       **d.to_dict(), **extra}))  # fmt: skip
            else:
                line = _line(name, d)
                if ids and d.crc_ok:
                    line += ("; made by " + " or ".join(made_by) if made_by
                             else "; made by none of the given bundles")  # fmt: skip
                click.echo(line)
        if not any(d.present for d in found) and status == EXIT_MARKED:
            status = EXIT_NOT_MARKED
    sys.exit(status)


def _verify_tracks(path: str, key: WatermarkKey, search: str, null_keys: int) -> list[Detection]:
    """The detection of every audio track of ``path``, one track at a time, each decoded into a
    temporary file and read back in blocks (bounded memory; the files go with the directory)."""
    with tempfile.TemporaryDirectory(prefix="v2a-verify-") as tmp:
        found = []
        for k in range(count_audio_tracks(path)):
            with spool_audio(path, tmp, track=k) as audio:
                found.append(detect_signal(audio, key, search=search, null_keys=null_keys,
                                           directory=tmp))  # fmt: skip
        return found


def _bundle_ids(bundles) -> dict[str, int]:
    """{bundle dir: its mark id}, from each manifest (the sha256s it lists; no file hashed)."""
    from ..bundle import load_bundle

    try:
        return {b: load_bundle(b, verify=False).manifest.mark_id for b in bundles}
    except ValueError as e:
        _fail(str(e))


@watermark.command("keygen")
@click.argument("path", type=click.Path(dir_okay=False))
def keygen_cmd(path) -> None:
    """Write a new random watermark key to PATH (mode 0600; never overwrites)."""
    try:
        key = generate_key_file(path)
    except (ValueError, OSError) as e:
        _fail(str(e))
    click.echo(f"{path}: new watermark key {key.key_id}; keep it secret, back it up")
