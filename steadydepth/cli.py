"""The `steadydepth` command: one subcommand per stage (`synth`, `ingest`, `demo`, ...).

Errors that are the user's to fix print one line (`error: ...`) and exit with status 2; nothing
already written is touched.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from steadydepth.config import Config, load_config
from steadydepth.errors import SteadyDepthError
from steadydepth.runtime import use_embedded_defaults


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} must be HxW, e.g. 192x320") from None
    if h < 16 or w < 16 or h % 2 or w % 2:
        raise argparse.ArgumentTypeError(f"size {text!r}: H and W must be even and at least 16")
    return h, w


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="YAML config file (sections: decode, teacher, store, ...)")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
        help="override one config value, e.g. --set decode.stride=2 (repeatable)",
    )


def _config(args: argparse.Namespace, extra: dict | None = None) -> Config:
    overrides = [*(f"{k}={v}" for k, v in (extra or {}).items() if v is not None), *args.overrides]
    return load_config(args.config, overrides)


def _print_ingest_summary(summary: dict) -> None:
    rows = summary["stores"]
    if rows:
        print(f"\n{'video':<28} {'frames':>6} {'chunks new/skipped':>19} {'seconds':>8}  store")
        for r in rows:
            chunks = f"{r['chunks_written']}/{r['chunks_skipped']}"
            print(f"{r['name']:<28} {r['num_frames']:>6} {chunks:>19} {r['seconds']:>8.1f}  {r['store_uri']}")
    for f in summary["failures"]:
        print(f"FAILED {f['video']}: {f['error']}", file=sys.stderr)


def cmd_synth(args: argparse.Namespace) -> int:
    from steadydepth.synth.generate import generate_benchmark

    paths = generate_benchmark(args.out, n_videos=args.videos, n_frames=args.frames, size=args.size, seed=args.seed,
                               fps=args.fps)
    for p in paths:
        print(p)
    print(f"wrote {len(paths)} video(s) with ground-truth sidecars (*.gt.zarr) to {args.out}")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    cfg = _config(args, {"store.root": args.store_root, "teacher.backend": args.teacher})
    use_embedded_defaults(cfg.orchestration.home)
    from flows.ingest import run_ingest

    summary = run_ingest(args.inputs, cfg)
    _print_ingest_summary(summary)
    return 1 if summary["failures"] else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from steadydepth.synth.generate import generate_benchmark

    out = Path(args.out)
    cfg = _config(args, {"store.root": str(out / "stores"), "teacher.backend": "synthetic",
                         "orchestration.home": str(out / "home")})
    use_embedded_defaults(cfg.orchestration.home)
    from flows.ingest import run_ingest

    videos_dir = out / "videos"
    print(f"[1/2] generating {args.videos} synthetic videos ({args.frames} frames, {args.size[0]}x{args.size[1]}) "
          f"in {videos_dir}")
    generate_benchmark(videos_dir, n_videos=args.videos, n_frames=args.frames, size=args.size, seed=args.seed)
    print(f"[2/2] ingesting them: decode (PyAV) -> teacher ({cfg.teacher.backend}) -> Zarr stores in {cfg.store.root}")
    summary = run_ingest([str(videos_dir)], cfg)
    _print_ingest_summary(summary)
    if summary["stores"]:
        first = summary["stores"][0]["store_uri"]
        print("\nOpen a store with xarray:")
        print(f"  python -c \"import xarray as xr; print(xr.open_zarr('{first}'))\"")
    return 1 if summary["failures"] else 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `steadydepth` command."""
    parser = argparse.ArgumentParser(prog="steadydepth", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("synth", help="generate the synthetic benchmark (mp4 + ground-truth sidecars)")
    p.add_argument("out", help="output folder")
    p.add_argument("--videos", type=int, default=4, help="number of videos (default 4)")
    p.add_argument("--frames", type=int, default=64, help="frames per video (default 64)")
    p.add_argument("--size", type=_size, default=(192, 320), help="HxW (default 192x320)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate (default 30)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("ingest", help="decode videos and write teacher depth stores (Zarr v3)")
    p.add_argument("inputs", nargs="+", help="videos, frame folders, folders of them, globs or .txt lists")
    p.add_argument("--store-root", help="where stores go (local path or fsspec URL); default store.root")
    p.add_argument("--teacher", choices=["unidepth", "precomputed", "synthetic"], help="teacher backend")
    _add_config_args(p)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("demo", help="run the pipeline end to end on generated videos, offline")
    p.add_argument("--out", default="demo-output", help="output folder (default demo-output)")
    p.add_argument("--videos", type=int, default=4)
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--size", type=_size, default=(192, 320))
    p.add_argument("--seed", type=int, default=0)
    _add_config_args(p)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `steadydepth` console script."""
    args = build_parser().parse_args(argv)
    for name in ("videos", "frames"):
        if getattr(args, name, 1) < 1:
            print(f"error: --{name} must be at least 1", file=sys.stderr)
            return 2
    try:
        return args.func(args)
    except SteadyDepthError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished chunks are kept; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
