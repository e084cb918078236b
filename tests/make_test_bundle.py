"""Build the small test bundle in tests/data/test_bundle/ (piper's generate_test_voice style).

Seven small torch modules with exactly the contract's I/O names, dtypes and dynamic axes
(docs/contract.md) at the ``tiny`` widths (C=8, H=64, hd=32, Dc=32, Ds=64, Dt=32, 80 mels,
hop 256, 16 kHz, 64 px frames). They are NOT the MMAudio networks: just enough nontrivial math
that pixels, prompts, seeds, CFG and every condition change the output, so runtime tests can
check plumbing (call counts, batching, determinism, windows) without torch.

    python tests/make_test_bundle.py [OUT_DIR]   # default: tests/data/test_bundle

The generated files are committed, so runtime tests never need torch. Weights come from a
fixed torch seed; re-running reproduces the same graphs up to exporter version differences.
"""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "data" / "test_bundle"

C, H, HD, DC, DS, DT = 8, 64, 32, 32, 64, 32
N_MELS, HOP, SR = 80, 256, 16000
CLIP_SIZE, SYNC_SIZE = 64, 64
OPSET = 17


def _freqs(n: int, max_period: float) -> torch.Tensor:
    return torch.exp(-math.log(max_period) * torch.arange(n, dtype=torch.float32) / n)


def _rope_table(n: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(N, hd/2, 2) cos/sin of n·f_i·scale, f_i = 1/10000^(2i/hd), as docs/contract.md says."""
    f = 1.0 / (10000.0 ** (torch.arange(0, HD, 2, dtype=torch.float32) / HD))  # (hd/2,)
    angle = (n.to(torch.float32) * scale)[:, None] * f[None, :]  # (N, hd/2)
    return torch.stack([angle.cos(), angle.sin()], dim=-1)  # (N, hd/2, 2)


def _rotate(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs of the first hd channels of x (.., N, H) by rope (N, hd/2, 2)."""
    head = x[..., :HD].unflatten(-1, (HD // 2, 2))  # (.., N, hd/2, 2)
    cos, sin = rope[..., 0], rope[..., 1]  # (N, hd/2)
    a, b = head[..., 0], head[..., 1]
    rot = torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)  # (.., N, hd)
    return torch.cat([rot, x[..., HD:]], dim=-1)


class ClipVisual(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3 * 8 * 8, DC)
        self.register_buffer("mean", torch.tensor([0.481, 0.458, 0.408]))
        self.register_buffer("std", torch.tensor([0.269, 0.261, 0.276]))

    def forward(self, frames):  # uint8 (F, Hc, Hc, 3)
        step = CLIP_SIZE // 8  # sample an 8 x 8 grid of pixels: cheap, still pixel-dependent
        x = frames.to(torch.float32)[:, step // 2 :: step, step // 2 :: step]  # (F, 8, 8, 3)
        x = (x / 255.0 - self.mean) / self.std
        x = torch.tanh(self.proj(x.flatten(1)))  # (F, Dc)
        return nn.functional.normalize(x, dim=-1)


class SyncVisual(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(2 * 4 * 4 * 3, DS)
        self.out = nn.Linear(DS, DS)

    def forward(self, segments):  # uint8 (S, 16, Hs, Hs, 3)
        step = SYNC_SIZE // 4  # a 4 x 4 grid of pixels per frame
        x = segments.to(torch.float32)[:, :, step // 2 :: step, step // 2 :: step]  # (S,16,4,4,3)
        x = (x / 255.0 - 0.5) / 0.5
        s = x.shape[0]
        x = x.reshape(s, 8, 2, 4, 4, 3)  # (S, 8 tokens, 2 frames, 4, 4, 3)
        pair = torch.cat([x[:, :, 0] + x[:, :, 1], x[:, :, 1] - x[:, :, 0]], dim=-1)  # (S,8,4,4,6)
        h = nn.functional.gelu(self.proj(pair.flatten(2)))  # (S, 8, Ds)
        return self.out(h)  # (S, 8, Ds)


class Text(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("freqs", _freqs(DT // 2, 1000.0))
        self.proj = nn.Linear(DT, DT)
        self.pos = nn.Parameter(torch.randn(77, DT) * 0.1)

    def forward(self, token_ids):  # int64 (B, 77)
        a = token_ids.to(torch.float32)[..., None] * self.freqs  # (B, 77, Dt/2)
        e = self.proj(torch.cat([a.sin(), a.cos()], dim=-1))  # (B, 77, Dt)
        real = (token_ids != 0).to(torch.float32)[..., None]  # (B, 77, 1): 0 = padding
        count = torch.cumsum(real, dim=1).clamp(min=1.0)  # (B, 77, 1)
        h = torch.cumsum(e * real, dim=1) / count + self.pos  # causal mean of real tokens
        return nn.functional.normalize(h, dim=-1)  # (B, 77, Dt)


class Conditioner(nn.Module):
    def __init__(self):
        super().__init__()
        self.empty_clip_feat = nn.Parameter(torch.randn(1, DC) * 0.3)
        self.empty_sync_feat = nn.Parameter(torch.randn(1, DS) * 0.3)
        self.clip_input_proj = nn.Linear(DC, H)
        self.text_input_proj = nn.Linear(DT, H)
        self.sync_input_proj = nn.Linear(DS, H)
        self.sync_pos_emb = nn.Parameter(torch.randn(8, H) * 0.1)
        self.clip_cond_proj = nn.Linear(H, H)
        self.text_cond_proj = nn.Linear(H, H)
        self.global_cond_mlp = nn.Sequential(nn.Linear(H, H), nn.SiLU(), nn.Linear(H, H))

    def forward(
        self, clip_features, sync_features, text_features, negative_text_features, sync_index
    ):
        b, lc, _ = clip_features.shape  # (B, Lc, Dc)
        ls = sync_features.shape[1]  # (B, Ls, Ds)
        clip = torch.cat([clip_features, self.empty_clip_feat.expand(b, lc, DC)])  # (2B, Lc, Dc)
        sync = torch.cat([sync_features, self.empty_sync_feat.expand(b, ls, DS)])  # (2B, Ls, Ds)
        text = torch.cat([text_features, negative_text_features])  # (2B, 77, Dt)
        clip_tokens = self.clip_input_proj(clip)  # (2B, Lc, H)
        text_tokens = self.text_input_proj(text)  # (2B, 77, H)
        global_cond = self.global_cond_mlp(
            self.clip_cond_proj(clip_tokens.mean(1)) + self.text_cond_proj(text_tokens.mean(1))
        )  # (2B, H)
        pos = self.sync_pos_emb.repeat(ls // 8, 1)  # (Ls, H)
        s = self.sync_input_proj(sync) + pos  # (2B, Ls, H)
        sync_cond = torch.index_select(s, 1, sync_index)  # (2B, L, H)
        n_lat = torch.arange(sync_index.shape[0])  # (L,)
        n_clip = torch.arange(lc)  # (Lc,)
        scale = torch.tensor(float(1.0)) * sync_index.shape[0] / lc
        latent_rope = _rope_table(n_lat, torch.tensor(1.0))  # (L, hd/2, 2)
        clip_rope = _rope_table(n_clip, scale)  # (Lc, hd/2, 2)
        return clip_tokens, text_tokens, global_cond, sync_cond, latent_rope, clip_rope


class Denoiser(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("freqs", _freqs(H // 2, 1000.0))
        self.t_embed = nn.Linear(H, H)
        self.in_proj = nn.Linear(C, H)
        self.out_proj = nn.Linear(H, C)

    def forward(
        self, x, t, clip_tokens, text_tokens, global_cond, sync_cond, latent_rope, clip_rope
    ):
        a = t[:, None] * self.freqs * 1000.0  # (B, H/2)
        temb = self.t_embed(torch.cat([a.sin(), a.cos()], dim=-1))  # (B, H)
        h = self.in_proj(x) + sync_cond + (global_cond + temb)[:, None]  # (B, L, H)
        q = _rotate(h, latent_rope)  # (B, L, H)
        k = _rotate(clip_tokens, clip_rope)  # (B, Lc, H)
        att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(H), dim=-1)  # (B, L, Lc)
        h = h + att @ clip_tokens
        att = torch.softmax(h @ text_tokens.transpose(1, 2) / math.sqrt(H), dim=-1)  # (B, L, 77)
        h = h + att @ text_tokens  # (B, L, H)
        return 2.0 * torch.tanh(self.out_proj(nn.functional.silu(h)))  # (B, L, C)


class VAEDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv_in = nn.Conv1d(C, 32, 3, padding=1)
        self.conv_out = nn.Conv1d(32, N_MELS, 3, padding=1)

    def forward(self, latent):  # (B, C, L)
        h = nn.functional.silu(self.conv_in(latent))  # (B, 32, L)
        h = nn.functional.interpolate(h, scale_factor=2.0, mode="nearest")  # (B, 32, 2L)
        return 0.5 * self.conv_out(h) - 2.5  # log10-mel-like, (B, n_mels, M)


class Vocoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv_pre = nn.Conv1d(N_MELS, 32, 3, padding=1)
        self.conv_post = nn.Conv1d(32, HOP, 1)

    def forward(self, mel):  # (B, n_mels, M)
        h = torch.tanh(self.conv_pre(mel + 2.5))  # (B, 32, M)
        frames = self.conv_post(h)  # (B, hop, M)
        b, _, m = frames.shape
        w = frames.transpose(1, 2).reshape(b, 1, m * HOP)  # (B, 1, W)
        return 0.5 * torch.tanh(w)


# name -> (module, inputs, outputs); each tensor is (name, dtype, contract shape)
def _specs() -> dict:
    u8, i64, f32 = "uint8", "int64", "float32"
    cond_out = [
        ("clip_tokens", f32, ["2B", "Lc", H]),
        ("text_tokens", f32, ["2B", 77, H]),
        ("global_cond", f32, ["2B", H]),
        ("sync_cond", f32, ["2B", "L", H]),
        ("latent_rope", f32, ["L", HD // 2, 2]),
        ("clip_rope", f32, ["Lc", HD // 2, 2]),
    ]
    return {
        "clip_visual": (
            ClipVisual(),
            [("frames", u8, ["F", CLIP_SIZE, CLIP_SIZE, 3])],
            [("clip_features", f32, ["F", DC])],
        ),
        "sync_visual": (
            SyncVisual(),
            [("segments", u8, ["S", 16, SYNC_SIZE, SYNC_SIZE, 3])],
            [("sync_features", f32, ["S", 8, DS])],
        ),
        "text": (Text(), [("token_ids", i64, ["B", 77])], [("text_features", f32, ["B", 77, DT])]),
        "conditioner": (
            Conditioner(),
            [
                ("clip_features", f32, ["B", "Lc", DC]),
                ("sync_features", f32, ["B", "Ls", DS]),
                ("text_features", f32, ["B", 77, DT]),
                ("negative_text_features", f32, ["B", 77, DT]),
                ("sync_index", i64, ["L"]),
            ],
            cond_out,
        ),
        "denoiser": (
            Denoiser(),
            [
                ("x", f32, ["B", "L", C]),
                ("t", f32, ["B"]),
                ("clip_tokens", f32, ["B", "Lc", H]),
                ("text_tokens", f32, ["B", 77, H]),
                ("global_cond", f32, ["B", H]),
                ("sync_cond", f32, ["B", "L", H]),
                ("latent_rope", f32, ["L", HD // 2, 2]),
                ("clip_rope", f32, ["Lc", HD // 2, 2]),
            ],
            [("velocity", f32, ["B", "L", C])],
        ),
        "vae_decoder": (
            VAEDecoder(),
            [("latent", f32, ["B", C, "L"])],
            [("mel", f32, ["B", N_MELS, "M"])],
        ),
        "vocoder": (
            Vocoder(),
            [("mel", f32, ["B", N_MELS, "M"])],
            [("waveform", f32, ["B", 1, "W"])],
        ),
    }


# Two sets of dynamic sizes: the export traces the first, the check runs the second.
DIMS_EXPORT = {"F": 16, "S": 3, "B": 2, "L": 63, "Lc": 16, "Ls": 24, "M": 126}
DIMS_CHECK = {"F": 5, "S": 7, "B": 3, "L": 77, "Lc": 20, "Ls": 56, "M": 40}


def _example(inputs: list, dims: dict, gen: torch.Generator) -> tuple:
    out = []
    for name, dtype, shape in inputs:
        size = [dims[d] if isinstance(d, str) else d for d in shape]
        if dtype == "uint8":
            out.append(torch.randint(0, 256, size, dtype=torch.uint8, generator=gen))
        elif name == "token_ids":
            out.append(torch.randint(0, 49408, size, generator=gen))
        elif name == "sync_index":
            out.append(torch.randint(0, dims["Ls"], size, generator=gen))
        else:
            out.append(torch.randn(size, generator=gen))
    return tuple(out)


def _check(name: str, module: nn.Module, inputs: list, outputs: list, path: Path) -> None:
    """Run the ONNX graph at other dynamic sizes than exported; it must match torch."""
    from v2a_runtime.backends import load_session

    args = _example(inputs, DIMS_CHECK, torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = module(*args)
    ref = ref if isinstance(ref, tuple) else (ref,)
    got = load_session(path).run({n: a.numpy() for (n, _, _), a in zip(inputs, args, strict=True)})
    for (out, _, _), r in zip(outputs, ref, strict=True):
        err = float(np.abs(got[out] - r.numpy()).max())
        assert err <= 1e-5 * max(1.0, float(r.abs().max())), f"{name}.{out}: max error {err}"


def _export(module: nn.Module, inputs: list, outputs: list, path: Path) -> None:
    args = _example(inputs, DIMS_EXPORT, torch.Generator().manual_seed(0))
    axes = {}
    for name, _, shape in (*inputs, *outputs):
        dyn = {i: d for i, d in enumerate(shape) if isinstance(d, str)}
        if dyn:
            axes[name] = dyn
    torch.onnx.export(
        module,
        args,
        str(path),
        dynamo=False,
        opset_version=OPSET,
        input_names=[n for n, _, _ in inputs],
        output_names=[n for n, _, _ in outputs],
        dynamic_axes=axes,
    )


def build(
    out: Path = OUT, *, variant: str = "test", weights_note: str | None = None, seed: int = 0
) -> Path:
    """Export the seven graphs to ``out/onnx`` and write ``out/manifest.json``."""
    from v2a_runtime.bundle import describe_file, write_manifest
    from v2a_runtime.config import (
        AudioSpec,
        ComponentSpec,
        Manifest,
        ModelSpec,
        SamplerSpec,
        SequenceSpec,
        TensorInfo,
        TokenizerSpec,
        VideoSpec,
    )

    torch.manual_seed(seed)
    # The legacy TorchScript exporter is used on purpose (exact names and dynamic_axes); its
    # deprecation and tracer warnings about shape constants do not apply to these graphs.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    (out / "onnx").mkdir(parents=True, exist_ok=True)
    components = {}
    with torch.no_grad():
        for name, (module, inputs, outputs) in _specs().items():
            rel = f"onnx/{name}.onnx"
            _export(module.eval(), inputs, outputs, out / rel)
            _check(name, module, inputs, outputs, out / rel)
            fs = describe_file(out, rel)
            components[name] = ComponentSpec(
                file=rel,
                sha256=fs.sha256,
                bytes=fs.bytes,
                precision="fp32",
                opset=OPSET,
                inputs=tuple(TensorInfo(n, d, tuple(s)) for n, d, s in inputs),
                outputs=tuple(TensorInfo(n, d, tuple(s)) for n, d, s in outputs),
            )
    rng = np.random.default_rng(seed)
    manifest = Manifest(
        model=ModelSpec(
            family="mmaudio",
            variant=variant,
            weights="random",
            model_id=1,
            weights_note=weights_note
            or (
                "test bundle: placeholder networks with the contract's I/O "
                "(tests/make_test_bundle.py), not the MMAudio architecture"
            ),
        ),
        audio=AudioSpec(
            sample_rate=SR,
            hop_length=HOP,
            n_mels=N_MELS,
            latent_channels=C,
            latent_mean=tuple(round(float(v), 4) for v in rng.normal(0, 0.1, C)),
            latent_std=tuple(round(float(v), 4) for v in rng.uniform(0.5, 1.5, C)),
        ),
        video=VideoSpec(clip_fps=8.0, clip_size=CLIP_SIZE, sync_fps=25.0, sync_size=SYNC_SIZE),
        sequence=SequenceSpec(max_duration=10.0, trained_duration=8.0),
        tokenizer=TokenizerSpec(file=None),
        sampler=SamplerSpec(solver="euler", steps=25, grid="uniform", cfg=4.5),
        components=components,
        versions={"torch": torch.__version__, "generator": "tests/make_test_bundle.py"},
    )
    write_manifest(out, manifest)
    return out


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT))
