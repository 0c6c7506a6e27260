"""``rftune serve``: answer OpenAI-style chat requests with a local model (e.g. to act as a judge)."""

from rftune.errors import ConfigError

HELP = "Serve a model (with an optional adapter) on an OpenAI-compatible /v1/chat/completions endpoint."


def add_arguments(parser) -> None:
    parser.add_argument("model", help="model name, folder, .gguf file, 'smollm2-135m-instruct' or NAME@VERSION")
    parser.add_argument("--adapter", help="a LoRA adapter folder (or NAME@VERSION) to apply")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (0 picks a free one; default 8000)")
    parser.add_argument("--name", help="model name clients must send (default: the MODEL argument)")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    parser.add_argument("--device", default="auto",
                        help="auto (CUDA when available, else the CPU), cpu, cuda or cuda:N")


def _log_requests_to_stderr() -> None:
    """The server's one line per request (the ``rftune.serve`` logger), with the time, on stderr."""
    import logging

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger = logging.getLogger("rftune.serve")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def run(args) -> int:
    from rftune.rollout.generation import resolve_backend
    from rftune.runtime.device import model_device
    from rftune.serve import load_service, make_server

    _log_requests_to_stderr()
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535, got {args.port}")
    service = load_service(args.model, adapter=args.adapter, dtype=args.dtype, device=args.device,
                           served_name=args.name)
    try:
        server = make_server(service, args.host, args.port)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {exc}") from exc
    _stop_on_interrupt(server)
    host, port = server.server_address[:2]
    print(f"serving {service.served_name!r} on http://{host}:{port}/v1 (Ctrl-C to stop)", flush=True)
    print(f"device: {model_device(service.model)}; dtype {args.dtype}; generation: "
          f"{resolve_backend('auto', service.model)}", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host} without authentication", flush=True)
    with server:
        server.serve_forever()
    print("stopped", flush=True)
    return 0


def _stop_on_interrupt(server) -> None:
    """Ctrl-C (SIGINT) asks the server to stop, from the moment it exists: no KeyboardInterrupt can land between
    the "serving" line and the serving loop, or inside a request. `shutdown` waits for the loop, so it runs on a
    thread of its own; asked before the loop starts, the loop ends at once."""
    import signal
    import threading

    def stop(signum, frame) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGINT, stop)
