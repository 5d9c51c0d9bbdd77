"""The ``facegrid`` command: ``setup`` (fetch, verify and convert the models), ``serve``, ``eval`` and
``import`` (enrol photos into a running service over HTTP)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _settings(args):
    from serve_app.config import load_settings

    return load_settings(args.config)


def cmd_setup(args) -> int:
    from models.export import prepare_models
    from models.weights import SetupError

    settings = _settings(args)
    try:
        prepare_models(settings.models.data_dir)
    except SetupError as error:
        print(f"facegrid setup failed: {error}", file=sys.stderr)
        return 2
    return 0


def cmd_serve(args) -> int:
    import signal
    import threading

    from models.export import prepare_models
    from models.weights import SetupError
    from serve_app.app import run

    settings = _settings(args)
    try:
        prepare_models(settings.models.data_dir, log=lambda message: None)
    except SetupError as error:
        print(f"facegrid serve: {error}", file=sys.stderr)
        return 2
    run(settings)
    print(
        f"facegrid is serving on http://{settings.host}:{settings.port}/v2 (docs: /v2/docs); Ctrl-C stops it",
        flush=True,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    import ray

    from serve_app.app import stop_service

    stop_service()
    ray.shutdown()
    return 0


def cmd_eval(args) -> int:
    from models.evaluation import evaluate
    from models.pipeline import ModelsNotReadyError, load_pipeline

    folder = Path(args.folder)
    if not (folder / "labels.csv").is_file():
        print(f"facegrid eval: {folder}/labels.csv not found", file=sys.stderr)
        return 2
    settings = _settings(args)
    try:
        pipeline = load_pipeline(settings.models)
    except ModelsNotReadyError as error:
        print(f"facegrid eval: {error}", file=sys.stderr)
        return 2
    subset = tuple(prefix for prefix in (args.subset or "").split(",") if prefix)
    report = evaluate(pipeline, folder, fit=args.fit, subset=subset)
    print("\n".join(report.lines()))
    if args.json:
        Path(args.json).write_text(json.dumps(report.as_dict(), indent=1))
    return 0


def cmd_import(args) -> int:
    import asyncio

    from .importer import import_photos

    source = Path(args.source)
    if not source.exists():
        print(f"facegrid import: {source} does not exist", file=sys.stderr)
        return 2
    settings = _settings(args)
    url = args.url or f"http://{settings.host}:{settings.port}"
    report = asyncio.run(
        import_photos(
            source,
            args.gallery,
            url,
            token=args.token or settings.auth_token,
            create=not args.no_create,
            several=args.several,
            concurrency=args.concurrency,
            progress=not args.quiet,
        )
    )
    print("\n".join(report.lines()))
    if args.report:
        report.write(Path(args.report))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facegrid", description="Face recognition service (FindFace /v2 API).")
    parser.add_argument("--config", type=Path, default=None, help="YAML settings file (else FACEGRID_CONFIG).")
    commands = parser.add_subparsers(dest="command", required=True)
    setup = commands.add_parser("setup", help="Fetch the pinned model weights, check them, convert to ONNX.")
    setup.set_defaults(run=cmd_setup)
    serve_command = commands.add_parser("serve", help="Start the /v2 service on a local Ray (embedded defaults).")
    serve_command.set_defaults(run=cmd_serve)
    evaluation = commands.add_parser("eval", help="Accuracy on a folder of photos with labels.csv.")
    evaluation.add_argument("folder", help="Folder holding labels.csv and the photos.")
    evaluation.add_argument("--fit", action="store_true", help="Also fit the confidence calibration.")
    evaluation.add_argument("--json", help="Write the report as JSON to this file.")
    evaluation.add_argument(
        "--subset",
        help="Comma-separated file-name prefixes: also report the pairs among "
        "those photos apart (e.g. the photos added second to ../shared/faces).",
    )
    evaluation.set_defaults(run=cmd_eval)
    importing = commands.add_parser(
        "import",
        help="Enrol a folder of photos (or a CSV: path,id[,meta],...) into "
        "a gallery of a running service, over its HTTP API.",
    )
    importing.add_argument(
        "source",
        help="A folder of photos, or a CSV with columns path, id and optionally meta "
        "(a JSON object); other columns become string meta fields.",
    )
    importing.add_argument("--gallery", required=True)
    importing.add_argument("--url", help="The service (default: host and port of the settings).")
    importing.add_argument("--token", help="Bearer token (default: auth_token of the settings).")
    importing.add_argument("--no-create", action="store_true", help="Fail if the gallery does not exist.")
    importing.add_argument(
        "--several",
        choices=("largest", "skip"),
        default="largest",
        help="A photo with several faces: enrol the largest (default), or skip it.",
    )
    importing.add_argument("--concurrency", type=int, default=4, help="Photos in flight at once.")
    importing.add_argument("--report", help="Write the per-photo report to this CSV file.")
    importing.add_argument("--quiet", action="store_true", help="No progress bar.")
    importing.set_defaults(run=cmd_import)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
