"""What each trained part gives back on held-out scenes (PyTorch, for the training report).

    python benchmarks/trained_parts.py --weights weights/tiny --clips 50

- ``world``: the world's own audio (the metrics' ceiling);
- ``vocoder``: the vocoder on the true log-mel;
- ``vae+vocoder``: true log-mel → VAE posterior mean → decoder → vocoder (the best the flow
  can reach: its targets are these latents).

Prints a markdown table of the sync and material metrics (``v2a_runtime.world.metrics``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from v2a_runtime import world
from v2a_runtime.config import NETWORKS
from v2a_runtime.world import metrics

from v2a_export.checkpoints import WeightFiles, load_networks
from v2a_export.models.configs import get_config
from v2a_export.models.mel import LogMel
from v2a_export.models.vae import VAE

ROWS = ("world", "vocoder", "vae+vocoder")


@torch.no_grad()
def roundtrip_rows(weights: Path, clips: int, variant: str = "tiny") -> dict[str, dict]:
    config = get_config(variant)
    files = WeightFiles(**{n: Path(weights) / f"{n}.safetensors" for n in NETWORKS})
    nets = load_networks(config, files)
    vae = VAE(config.vae)  # the encoder, from the raw file (load_networks folds the VAE)
    vae.load_state_dict(_raw_vae(files.vae))
    vae.eval()
    mel_fn = LogMel(config.mel)
    rows: dict[str, list] = {r: [] for r in ROWS}
    for seed in world.held_out_seeds(clips):
        scene = world.make_scene(seed, 8.0)
        truth = scene.ground_truth()
        audio = world.render_audio(scene)
        mel = mel_fn(torch.from_numpy(audio)[None])  # (1, n_mels, M)
        voc = nets.vocoder(mel)[0, 0].numpy()
        rec = nets.vocoder(nets.vae.decode(vae.encode(mel).mean))[0, 0].numpy()
        for name, a in zip(ROWS, (audio, voc, rec), strict=True):
            rows[name].append(metrics.evaluate_clip(np.asarray(a, np.float32), truth))
    return {name: metrics.summarize(r).to_dict() for name, r in rows.items()}


def _raw_vae(path: Path) -> dict:
    from safetensors.torch import load_file

    return {k: v.float() for k, v in load_file(str(path)).items()}


def table(rows: dict[str, dict]) -> str:
    out = ["| audio | clips | hit rate | median abs offset (ms) | p95 (ms) | false onsets/s | "
           "material accuracy (n) |", "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        out.append(f"| {name} | {r['n_clips']} | {r['hit_rate']:.3f} | "
                   f"{r['median_abs_offset_ms']:.1f} | {r['p95_abs_offset_ms']:.1f} | "
                   f"{r['false_per_second']:.3f} | {r['material_accuracy']:.3f} "
                   f"({r['material_total']}) |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--clips", type=int, default=50)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    print(table(roundtrip_rows(args.weights, args.clips)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
