"""Write the sampler step graphs packaged with v2a_runtime (runtime/data/step_graphs/).

    python scripts/make_step_graphs.py [--check]

The runtime needs no ``onnx`` package, so these tiny graphs are generated here and committed;
``--check`` (and tests/test_cuda_backend.py) verifies the committed files equal what this script
writes. They let the device-resident sampling loop (``v2a_runtime.backends.cuda.loop``) do the
classifier-free-guidance combine and the Euler update on the device, with no host copy:

``cfg_step_<v>_<x>.onnx``  (CFG on: the denoiser ran on [cond × K; uncond × K])
    inputs   x (K, L, C) f32 — the state; velocity (2K, L, C) <v>; dt (1,) f32;
             w (1,) f32 and w_uncond (1,) f32 (= 1 − w, computed on the host in float64 as the
             numpy sampler does, so both paths round alike)
    outputs  guided (K, L, C) f32 = w·v_cond + w_uncond·v_uncond
             x_next (K, L, C) f32 = x + dt·guided
             x_den (2K, L, C) <x> = [x_next; x_next], the denoiser's next input

``plain_step_<v>_<x>.onnx``  (CFG off: velocity (K, L, C); guided = velocity; x_den = x_next)

<v>/<x> are the element types of the denoiser's velocity output and x input: f32 for fp32
graph I/O (the default), f16 for fp16 I/O. The split of the 2K rows uses Split-18's
``num_outputs`` attribute, so the graphs have no shape computation (nothing for onnxruntime to
place on the CPU).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import onnx
from onnx import TensorProto, helper

OUT = Path(__file__).resolve().parents[1] / "runtime" / "data" / "step_graphs"
OPSET = 18
TYPES = {"f32": TensorProto.FLOAT, "f16": TensorProto.FLOAT16}
F32 = TensorProto.FLOAT


def _io(name, elem, *shape):
    return helper.make_tensor_value_info(name, elem, list(shape))


def _to_f32(name: str, elem: int, nodes: list) -> str:
    if elem == F32:
        return name
    nodes.append(helper.make_node("Cast", [name], [f"{name}_f32"], to=F32, name=f"cast_{name}"))
    return f"{name}_f32"


def step_graph(cfg: bool, v: str, x: str) -> onnx.ModelProto:
    vt, xt = TYPES[v], TYPES[x]
    rows = "2K" if cfg else "K"
    nodes: list = []
    vel = _to_f32("velocity", vt, nodes)
    inputs = [_io("x", F32, "K", "L", "C"), _io("velocity", vt, rows, "L", "C"),
              _io("dt", F32, 1)]  # fmt: skip
    if cfg:
        inputs += [_io("w", F32, 1), _io("w_uncond", F32, 1)]
        nodes += [
            helper.make_node(
                "Split", [vel], ["v_cond", "v_uncond"], axis=0, num_outputs=2, name="split_branches"
            ),  # fmt: skip
            helper.make_node("Mul", ["v_cond", "w"], ["wc"], name="weight_cond"),
            helper.make_node("Mul", ["v_uncond", "w_uncond"], ["wu"], name="weight_uncond"),
            helper.make_node("Add", ["wc", "wu"], ["guided"], name="combine"),
        ]
    else:
        nodes.append(helper.make_node("Identity", [vel], ["guided"], name="guided"))
    nodes += [
        helper.make_node("Mul", ["guided", "dt"], ["step"], name="scale"),
        helper.make_node("Add", ["x", "step"], ["x_next"], name="euler"),
    ]
    den = "x_next"
    if cfg:
        nodes.append(helper.make_node("Concat", ["x_next", "x_next"], ["x_pair"], axis=0,
                                      name="pair"))  # fmt: skip
        den = "x_pair"
    if xt != F32:
        nodes.append(helper.make_node("Cast", [den], ["x_den"], to=xt, name="cast_x_den"))
    else:
        nodes.append(helper.make_node("Identity", [den], ["x_den"], name="x_den"))
    outputs = [_io("guided", F32, "K", "L", "C"), _io("x_next", F32, "K", "L", "C"),
               _io("x_den", xt, rows, "L", "C")]  # fmt: skip
    name = f"{'cfg' if cfg else 'plain'}_step_{v}_{x}"
    graph = helper.make_graph(nodes, name, inputs, outputs)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="v2a-export"
    )
    model.ir_version = 8  # readable by onnxruntime >= 1.14
    onnx.checker.check_model(model, full_check=True)
    return model


def graphs() -> dict[str, bytes]:
    out = {}
    for cfg in (True, False):
        for v in TYPES:
            for x in TYPES:
                model = step_graph(cfg, v, x)
                out[f"{model.graph.name}.onnx"] = model.SerializeToString(deterministic=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare instead of writing")
    args = ap.parse_args(argv)
    stale = []
    OUT.mkdir(parents=True, exist_ok=True)
    for name, data in graphs().items():
        path = OUT / name
        if args.check:
            if not path.is_file() or path.read_bytes() != data:
                stale.append(name)
        else:
            path.write_bytes(data)
    if stale:
        print(f"stale step graphs (run scripts/make_step_graphs.py): {stale}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
