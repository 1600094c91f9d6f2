"""``python -m components.serve --model_name NAME --model_dir DIR [KServe's own flags]``."""

import argparse
import logging
import os
import sys

from kserve import ModelServer, model_server

from components.common.errors import ConfigurationError, PlatformError
from components.common.inference import PRECISIONS
from components.common.logs import configure_logging
from components.serve import bind, disconnect, drain
from components.serve.backends import BACKENDS
from components.serve.explain import ExplainLimits
from components.serve.explainer import ExplainConfig
from components.serve.model import VARIANT_ENV, VERSION_ENV, ReviewClassifierModel
from components.serve.payload_logger import PayloadLogger, served_version
from components.serve.payloads import Limits
from components.serve.variants import AUTO, TARGETS, VARIANTS

parser = argparse.ArgumentParser(parents=[model_server.parser], description=__doc__)
parser.add_argument("--model_dir", required=True, help="save_pretrained directory or s3:// prefix")
parser.add_argument(
    "--backend",
    choices=BACKENDS,
    default="torch",
    help="torch (fp32 reference on CPU, bf16 on CUDA), onnx, or onnx-int8 (opt-in)",
)
parser.add_argument(
    "--variant",
    choices=(AUTO, *VARIANTS),
    default="",
    help="serve a registered variant: auto (the fastest the gate found eligible for --target, "
    "from variants.json), or one by name (torch-fp32, onnx-fp32, onnx-int8, torch-bf16); "
    "unset: --backend and --precision as given",
)
parser.add_argument(
    "--target",
    choices=TARGETS,
    default=None,
    help="what --variant auto chooses for (default: gpu with CUDA, else cpu)",
)
parser.add_argument(
    "--bind_address",
    default=os.environ.get("BIND_ADDRESS", "0.0.0.0"),
    help="address the HTTP and gRPC ports listen on (in a pod: all, 0.0.0.0; on a laptop: "
    "127.0.0.1)",
)
parser.add_argument(
    "--precision",
    choices=PRECISIONS,
    default="auto",
    help="torch backend: auto (bf16 on CUDA, fp32 on CPU), fp32 or bf16",
)
parser.add_argument(
    "--cuda_graphs",
    action="store_true",
    help="torch backend on CUDA: capture one CUDA graph per bucket shape",
)
parser.add_argument("--max_batch_size", type=int, default=64, help="texts per batch at most")
parser.add_argument(
    "--max_batch_tokens", type=int, default=8192, help="real (unpadded) tokens per batch at most"
)
parser.add_argument(
    "--max_queue",
    type=int,
    default=512,
    help="texts waiting for a batch at most; beyond, 503 with Retry-After",
)
parser.add_argument("--max_instances", type=int, default=256, help="texts per request at most")
parser.add_argument("--max_chars", type=int, default=20_000, help="characters per text at most")
parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: best available)")
parser.add_argument("--logger_url", default="",
                    help="capture sink URL: each inference goes there as CloudEvents")  # fmt: skip
parser.add_argument(
    "--drain_seconds",
    type=float,
    default=None,
    help="on SIGTERM, answer what was sent and close connections for at most "
    f"this long (default: ${drain.DRAIN_ENV}, else {drain.DEFAULT_DRAIN_S:g})",
)
parser.add_argument("--model_version", default="",
                    help="registered version served (default: from served_from.json)")  # fmt: skip
_x = ExplainConfig()
parser.add_argument("--explain", action=argparse.BooleanOptionalAction, default=_x.enabled,
                    help="answer :explain with integrated-gradients word attributions")  # fmt: skip
parser.add_argument("--explain_max_instances", type=int, default=_x.limits.max_instances,
                    help="texts per :explain request at most (400 beyond)")  # fmt: skip
parser.add_argument("--explain_max_steps", type=int, default=_x.limits.max_steps,
                    help="integration steps an :explain request may ask (400 beyond)")  # fmt: skip
parser.add_argument("--explain_steps", type=int, default=_x.limits.default_steps,
                    help="integration steps when a request names none")  # fmt: skip
parser.add_argument("--explain_max_concurrent", type=int, default=_x.max_concurrent,
                    help=":explain requests in flight at most (503 beyond)")  # fmt: skip
parser.add_argument("--explain_chunk_tokens", type=int, default=_x.chunk_tokens,
                    help="token positions per explanation chunk on the model thread")  # fmt: skip
parser.add_argument("--capture_top_words_below", type=float, default=_x.capture_below,
                    help="captured predictions below this confidence carry their top words "
                    "(computed when the model is idle; 0 switches it off)")  # fmt: skip


def main() -> int:
    args, _ = parser.parse_known_args()
    configure_logging()
    try:
        if args.drain_seconds is None:
            args.drain_seconds = drain.drain_seconds()
        elif args.drain_seconds <= 0:
            raise ConfigurationError(f"--drain_seconds {args.drain_seconds:g} must be > 0")
    except ConfigurationError as e:
        logging.getLogger(__name__).error("%s", e)
        return 2
    payload_logger = None
    version = (args.model_version or os.environ.get(VERSION_ENV, "")
               or served_version(args.model_dir))  # fmt: skip
    if args.logger_url:
        payload_logger = PayloadLogger(args.logger_url, args.model_name, version)
    try:
        limits = ExplainLimits(
            args.explain_max_instances, args.explain_max_steps, args.explain_steps
        )
        explain = ExplainConfig(args.explain, limits, args.explain_max_concurrent,
                                args.explain_chunk_tokens, args.capture_top_words_below,
                                model_version=version)  # fmt: skip
        model = ReviewClassifierModel(
            args.model_name, args.model_dir, args.max_batch_size, args.max_batch_tokens,
            args.max_queue, Limits(args.max_instances, args.max_chars), args.device, args.backend,
            args.precision, args.cuda_graphs, payload_logger, explain,
            variant=args.variant or os.environ.get(VARIANT_ENV, ""), model_version=version,
            target=args.target or "",
        )  # fmt: skip
        model.load()
    except PlatformError as e:
        logging.getLogger(__name__).error("%s", e)
        return 1
    bind.listen_on(args.bind_address)
    disconnect.install(model_server.app)
    server = ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, workers=args.workers,
                         enable_grpc=args.enable_grpc)  # fmt: skip
    # on SIGTERM: finish what was sent, close keep-alive connections cleanly, then exit
    drain.install(model_server.app, server, args.drain_seconds)
    server.start([model])
    return 0


if __name__ == "__main__":
    sys.exit(main())
