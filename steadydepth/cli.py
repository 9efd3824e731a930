"""The `steadydepth` command: one subcommand per stage (`synth`, `ingest`, `demo`, ...).

Errors that are the user's to fix print one line (`error: ...`) and exit with status 2; nothing
already written is touched.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from evaluation.metric_names import GATE_METRICS
from steadydepth.config import Config, load_config
from steadydepth.errors import InputError, SteadyDepthError
from steadydepth.export.config import EXPORT_FORMATS
from steadydepth.runtime import start_embedded_server, use_embedded_defaults
from storage import uri as uris
from storage.naming import list_stores, require_distinct_names, require_teacher_stores
from storage.writing import require_writable


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
        print(f"\n{'video':<28} {'frames':>6} {'chunks new/skipped':>19} {'bad px/frames':>14} {'seconds':>8}  store")
        for r in rows:
            chunks = f"{r['chunks_written']}/{r['chunks_skipped']}"
            bad = f"{r.get('invalid_pixels_total', 0)}/{r.get('invalid_frames', 0)}"
            print(f"{r['name']:<28} {r['num_frames']:>6} {chunks:>19} {bad:>14} {r['seconds']:>8.1f}  {r['store_uri']}")
    _print_failures(summary["failures"])


def _print_failures(failures: list[dict[str, str]]) -> None:
    for f in failures:
        print(f"FAILED {f.get('video') or f.get('store')}: {f['error']}", file=sys.stderr)


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
    _check_inputs(args.inputs)
    _check_writable(cfg, "store.root")
    _check_devices(cfg, "teacher.device")
    _start(cfg)
    from flows.ingest import run_ingest

    summary = run_ingest(args.inputs, cfg, dask=args.dask)
    if not summary["stores"] and not summary["failures"]:
        print(f"ingest: nothing to do, no videos or frame folders in {' '.join(args.inputs)}")
    _print_ingest_summary(summary)
    return 1 if summary["failures"] else 0


def _print_evaluation(evaluation: dict) -> None:
    means = evaluation["means"]
    keys = [k for k in GATE_METRICS if any(k in m for m in means.values())]  # what the gate judges
    print(f"\n{'method':<22}" + "".join(f"{k:>16}" for k in keys))
    for method, metrics in means.items():
        print(f"{method:<22}" + "".join(f"{metrics.get(k, float('nan')):>16.4f}" for k in keys))
    print(evaluation["verdict"])
    for reason in evaluation["gate_reasons"]:
        print(f"  {reason}")
    print(f"report: {evaluation['report_dir']}/report.md")


def _check_inputs(inputs: list[str]) -> None:
    """Every input exists and names videos, and no two videos would write one store (InputError otherwise):
    checked before any server starts."""
    from steadydepth.video.open import discover_sources, source_name

    names = {}
    for item in inputs:
        for source in discover_sources(item):
            same_file = source if uris.is_url(source) else str(Path(source).resolve())  # one video given twice is one
            names[same_file] = source_name(source)
    require_distinct_names(names)


def _check_writable(cfg: Config, *settings: str) -> None:
    """Each named output folder (e.g. "store.root") can be written (InputError otherwise), before any work starts:
    a read-only or unwritable location is refused before anything is computed."""
    for setting in settings:
        section, field = setting.split(".")
        require_writable(getattr(getattr(cfg, section), field), setting, cfg.store.storage_options)


def _check_stores(cfg: Config) -> None:
    """There are teacher stores to work on (InputError otherwise), checked before any server starts."""
    require_teacher_stores(cfg.store.root, cfg.store.storage_options)


def _check_model(ref: str | None) -> None:
    """A checkpoint path must exist (a registry URI is checked by MLflow when it loads)."""
    if ref and "://" not in ref and not Path(ref).is_file():
        raise InputError(f"model {ref} not found; pass a checkpoint (.pt) or an MLflow model URI (models:/...)")


def _check_devices(cfg: Config, *settings: str) -> None:
    """Each named device setting (e.g. "train.device") exists on this machine: ConfigError otherwise."""
    from steadydepth.device import resolve_device

    for setting in settings:
        section, field = setting.split(".")
        resolve_device(getattr(getattr(cfg, section), field), setting)


def _start(cfg: Config, *, need_champion: bool = False) -> None:
    home = use_embedded_defaults(cfg.orchestration.home)
    if need_champion:  # the registry needs no Prefect server: say so before one starts
        _check_champion(cfg.orchestration.model_name, home)
    print(f"state (Prefect, MLflow) under {home}", file=sys.stderr)  # stdout stays the command's answer
    start_embedded_server()  # stopped by a watchdog however this process ends


def _check_champion(model_name: str, home: Path | str) -> None:
    """InputError unless the registry has a `champion` of model_name (what a command without --model uses)."""
    import logging

    from steadydepth import tracking

    # a fresh home's MLflow database is created here: its set-up log lines would bury the one-line error
    quiet = [logging.getLogger(name) for name in ("mlflow", "alembic")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.WARNING)
    try:
        champion = tracking.champion_version(model_name)
    finally:
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)
    if champion is None:
        raise InputError(
            f"no champion of {model_name} in the MLflow registry under {home}: pass --model (a checkpoint .pt, or "
            f"models:/{model_name}/VERSION from `steadydepth train`), or promote one with `steadydepth run`"
        )


def cmd_train(args: argparse.Namespace) -> int:
    cfg = _config(args, {"store.root": args.store_root, "train.steps": args.steps})
    _check_stores(cfg)
    _check_devices(cfg, "train.device")
    _start(cfg)
    from flows.model_flows import train_flow

    result = train_flow(cfg.model_dump(mode="json"), dataset=args.dataset)
    print(f"checkpoint: {result['checkpoint']}")
    print(f"registered: {result['model_uri']} (MLflow run {result['run_id']})")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    cfg = _config(args, {"store.root": args.store_root})
    _check_stores(cfg)
    _check_model(args.model)
    _check_writable(cfg, "store.root")  # refined stores go beside the teacher stores
    _start(cfg, need_champion=args.model is None)
    import json

    from evaluation.report import json_safe
    from flows.common import run_for_summary
    from flows.model_flows import evaluate_flow

    model = args.model or f"models:/{cfg.orchestration.model_name}@champion"
    evaluation, _ = run_for_summary(evaluate_flow, model, cfg.model_dump(mode="json"), out_dir=args.out)
    if args.json:  # one strict JSON document: undefined metrics are null, never NaN
        keys = ("means", "gate_passed", "gate_reasons", "flicker_metric")
        print(json.dumps(json_safe({k: evaluation[k] for k in keys}), indent=2, allow_nan=False))
    else:
        _print_evaluation(evaluation)
    _print_failures(evaluation["refine_failures"])
    if evaluation["refine_failures"]:
        return 1
    return 0 if evaluation["gate_passed"] else 3


def cmd_export(args: argparse.Namespace) -> int:
    extra = {"store.root": args.store_root, "export.out_dir": args.out, "export.overwrite": args.overwrite or None}
    if args.formats:
        extra["export.formats"] = "[" + ",".join(args.formats) + "]"
    cfg = _config(args, extra)
    _check_stores(cfg)
    _check_model(args.model)
    _check_writable(cfg, "store.root", "export.out_dir")
    _start(cfg)
    from flows.common import run_for_summary
    from flows.export import export_flow

    result, _ = run_for_summary(export_flow, cfg.model_dump(mode="json"), args.model)
    for uri, formats in result["exports"].items():
        print(f"{uri}: {', '.join(sorted(formats))}")
    print(f"exports of {result['model']} depth in {cfg.export.out_dir}")
    _print_failures(result["failures"])
    return 1 if result["failures"] else 0


def _run_pipeline(inputs: list[str], cfg: Config, dask: bool) -> int:
    from flows.common import run_for_summary
    from flows.pipeline import pipeline_flow

    summary, _ = run_for_summary(pipeline_flow, inputs, cfg.model_dump(mode="json"), dask=dask)
    _print_ingest_summary(summary["ingest"])
    if summary["train"]:
        print(f"\ntrained: {summary['train']['model_uri']}  checkpoint {summary['train']['checkpoint']}")
    if summary["evaluation"]:
        _print_evaluation(summary["evaluation"])
        if summary["evaluation"]["promotion"]:
            print(summary["evaluation"]["promotion"]["reason"])
    if summary["export"]:
        print(f"exports ({summary['export']['model']} depth) in {cfg.export.out_dir}")
    home = cfg.orchestration.home
    print("\nLook at it:")
    print(f"  Prefect UI: PREFECT_HOME={home}/prefect prefect server start   (then http://127.0.0.1:4200)")
    print(f"  MLflow UI:  mlflow ui --backend-store-uri sqlite:///{home}/mlflow.db")
    if summary["evaluation"]:
        _print_failures(summary["evaluation"]["refine_failures"])
    if summary["export"]:
        _print_failures(summary["export"]["failures"])
    failed = summary["ingest"]["failures"] or (summary["evaluation"] or {}).get("refine_failures") or (
        summary["export"] or {}).get("failures")
    return 1 if failed else 0


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _config(args, {"store.root": args.store_root, "export.overwrite": args.overwrite or None})
    _check_inputs(args.inputs)
    _check_writable(cfg, "store.root", "export.out_dir")
    _check_devices(cfg, "teacher.device", "train.device")
    _start(cfg)
    return _run_pipeline(args.inputs, cfg, args.dask)


def cmd_demo(args: argparse.Namespace) -> int:
    from steadydepth.synth.generate import generate_benchmark

    out = Path(args.out)
    cfg = _config(args, {
        "store.root": str(out / "stores"), "teacher.backend": "synthetic", "orchestration.home": str(out / "home"),
        "export.out_dir": str(out / "exports"), "export.formats": f"[{','.join(EXPORT_FORMATS)}]",
        "export.ply_every": 8, "export.overwrite": True, "train.steps": args.steps,
    })
    _start(cfg)
    videos_dir = out / "videos"
    print(f"generating {args.videos} synthetic videos ({args.frames} frames, {args.size[0]}x{args.size[1]}) "
          f"in {videos_dir}")
    generate_benchmark(videos_dir, n_videos=args.videos, n_frames=args.frames, size=args.size, seed=args.seed)
    print("pipeline: decode -> teacher -> Zarr stores -> train smoother -> refine -> evaluate -> promote -> export")
    code = _run_pipeline([str(videos_dir)], cfg, dask=False)
    stores = list_stores(str(out / "stores"), "teacher")
    if stores:
        print("\nOpen a store with xarray:")
        print(f"  python -c \"import xarray as xr; print(xr.open_zarr('{stores[0]}'))\"")
    return code


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
    p.add_argument("--dask", action="store_true", help="run videos in parallel on a local Dask cluster")
    _add_config_args(p)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("train", help="train the smoother on the teacher stores (MLflow-tracked, registered)")
    p.add_argument("--store-root", help="where the teacher stores are; default store.root")
    p.add_argument("--steps", type=int, help="optimizer steps (default train.steps)")
    p.add_argument("--dataset", help="dataset name for the MLflow experiment (default: the store root)")
    _add_config_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="refine with a model and compare with the teacher and baselines; gate")
    p.add_argument("--store-root", help="where the teacher stores are; default store.root")
    p.add_argument("--model", help="checkpoint (.pt) or MLflow model URI; default models:/<name>@champion")
    p.add_argument("--out", help="report folder (default <home>/evaluation)")
    p.add_argument("--json", action="store_true", help="print the metrics JSON instead of the table")
    _add_config_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("export", help="write refined depth as npz / EXR / 16-bit PNG / PLY / previews / stereo")
    p.add_argument("--store-root", help="where the teacher stores are; default store.root")
    p.add_argument("--model", help="checkpoint (.pt) or MLflow model URI; default models:/<name>@champion")
    p.add_argument("--formats", nargs="+", choices=EXPORT_FORMATS)
    p.add_argument("--out", help="export folder (default export.out_dir)")
    p.add_argument("--overwrite", action="store_true", help="replace existing exports")
    _add_config_args(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("run", help="the whole pipeline: ingest, train, evaluate, promote, export")
    p.add_argument("inputs", nargs="+", help="videos, frame folders, folders of them, globs or .txt lists")
    p.add_argument("--store-root", help="where stores go; default store.root")
    p.add_argument("--dask", action="store_true", help="run per-video tasks on a local Dask cluster")
    p.add_argument("--overwrite", action="store_true", help="replace existing exports")
    _add_config_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="run the whole pipeline on generated videos, offline")
    p.add_argument("--out", default="demo-output", help="output folder (default demo-output)")
    p.add_argument("--videos", type=int, default=4)
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--size", type=_size, default=(192, 320))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=150, help="training steps (default 150)")
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
