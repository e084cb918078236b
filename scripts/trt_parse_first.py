"""Parse (and quickly build) every graph with TensorRT before anything else, and compare with
the static check (v2a_export.export.trt_compat), so the first GPU machine says in seconds
whether TensorRT takes our graphs, and whether the static check agrees with it.

    python scripts/trt_parse_first.py [BUNDLE|GRAPH.onnx ...] [--no-build] [--out FILE.json]
    python scripts/trt_parse_first.py --dry-run        # no TensorRT: the static half only

Default graphs: the shipped bundle (runtime/default_bundle) and the test bundle
(tests/data/test_bundle). Per graph: the static check's violations; TensorRT's parse into a
strongly typed network (``OnnxParser.parse_from_file``, every parser error with its node); a
build at one small profile (the bundle's shortest window, one track, builder optimization
level 0: seconds, not the tuned engine); the verdict — ``agree`` (both pass, or both fail),
``CHECKER MISSED`` (TensorRT failed where the static check passed: the table needs a rule), or
``CHECKER TOO STRICT`` (TensorRT took a graph the check refused). The ``trtexec`` command for
the same build is printed per graph. Exit status 1 on any failure or disagreement.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PATHS = (REPO / "runtime" / "default_bundle", REPO / "tests" / "data" / "test_bundle")


def graphs(paths: list[Path]) -> list[tuple[str, Path, object]]:
    """(label, onnx path, its one-window profile or None) for every graph under ``paths``."""
    from v2a_runtime.bundle import MANIFEST, load_bundle

    from v2a_export.engines.profiles import ProfileRequest, engine_profiles
    from v2a_export.export.descriptors import DurationRange, TrackRange

    out = []
    for path in paths:
        if path.is_dir() and (path / MANIFEST).is_file():
            bundle = load_bundle(path, verify=False)
            m = bundle.manifest
            shortest = m.rates.min_duration
            request = ProfileRequest(
                DurationRange(shortest, shortest, shortest), TrackRange(1, 1, 1)
            )
            profiles = engine_profiles(m, request, tuple(m.components))
            for name in m.components:
                out.append((f"{path.name}/{name}", bundle.path(name), profiles[name]))
        elif path.is_file():
            out.append((path.name, path, None))
        else:
            raise SystemExit(f"error: {path} is neither a bundle nor an .onnx file")
    return out


def trtexec_command(path: Path, profile) -> str:
    cmd = ["trtexec", f"--onnx={path}", "--stronglyTyped", "--builderOptimizationLevel=0",
           "--skipInference"]  # fmt: skip
    if profile:
        for flag, which in (("--minShapes", "min"), ("--optShapes", "opt"), ("--maxShapes", "max")):
            shapes = ",".join(
                f"{p.name}:{'x'.join(str(d) for d in getattr(p, which))}" for p in profile
            )
            cmd.append(f"{flag}={shapes}")
    return " ".join(cmd)


def tensorrt_parse_and_build(trt, path: Path, profile, build: bool) -> dict:
    logger = trt.Logger(trt.Logger.ERROR)
    started = time.perf_counter()
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    result = {"parsed": bool(parser.parse_from_file(str(path)))}
    errors = [parser.get_error(i) for i in range(parser.num_errors)]
    result["parser_errors"] = [
        f"node {e.node()} ({getattr(e, 'node_operator', lambda: '?')()}): {e.desc()}"
        for e in errors
    ]
    result["layers"] = network.num_layers
    result["parse_s"] = round(time.perf_counter() - started, 2)
    if not result["parsed"] or not build or profile is None:
        return result
    config = builder.create_builder_config()
    config.builder_optimization_level = 0
    opt = builder.create_optimization_profile()
    for p in profile:
        opt.set_shape(p.name, p.min, p.opt, p.max)
    config.add_optimization_profile(opt)
    started = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    result["built"] = plan is not None
    result["build_s"] = round(time.perf_counter() - started, 2)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="bundles or .onnx files")
    parser.add_argument("--no-build", action="store_true", help="parse only")
    parser.add_argument("--dry-run", action="store_true", help="no TensorRT: static check only")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    args = parser.parse_args(argv)

    from v2a_export.export import trt_operators
    from v2a_export.export.trt_compat import check_file

    trt = None
    if not args.dry_run:
        try:
            import tensorrt as trt
        except ImportError:
            print("error: no tensorrt module here (pip install -e '.[tensorrt]'); "
                  "--dry-run runs the static check alone", file=sys.stderr)  # fmt: skip
            return 2
    print(f"TensorRT {trt.__version__ if trt else '(dry run)'}; static table: TensorRT "
          f"{trt_operators.TENSORRT} ({trt_operators.SOURCE})")  # fmt: skip
    rows, failed = [], False
    for label, path, profile in graphs(args.paths or list(DEFAULT_PATHS)):
        violations = check_file(path)
        row = {"graph": label, "static_violations": [str(v) for v in violations]}
        row["trtexec"] = trtexec_command(path, profile)
        if trt is not None:
            row.update(tensorrt_parse_and_build(trt, path, profile, not args.no_build))
            ok = row["parsed"] and row.get("built", True)
            if ok == (not violations):
                row["verdict"] = "agree"
            else:
                row["verdict"] = "CHECKER MISSED" if not ok else "CHECKER TOO STRICT"
            failed |= not ok or row["verdict"] != "agree"
            timing = f"parse {row['parse_s']} s" + (
                f", build {row['build_s']} s" if "build_s" in row else ""
            )
            status = "ok" if ok else "FAILED"
            print(
                f"{label:<28} {status:<7} {timing:<26} static {len(violations)}  {row['verdict']}"
            )
            for line in row["parser_errors"][:5]:
                print(f"    {line}")
        else:
            failed |= bool(violations)
            print(f"{label:<28} static {len(violations)} violation(s)")
        for v in violations:
            print(f"    {v}")
        rows.append(row)
    if trt is None:
        for row in rows:
            print(f"  {row['trtexec']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        data = {"tensorrt": trt.__version__ if trt else None, "graphs": rows}
        args.out.write_text(json.dumps(data, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
