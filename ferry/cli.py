"""The `ferry` command: `ferry run` (a CopyJob on this machine), later `ferry worker` and `ferry operator`."""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ferry", description="Bulk S3-to-S3 copy jobs.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details to stderr")
    commands = parser.add_subparsers(dest="command", required=True)

    from ferry.worker import run

    run_parser = commands.add_parser(
        "run",
        help="run a CopyJob on this machine",
        description=run.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_arguments(run_parser)
    run_parser.set_defaults(handler=run.run_cli)

    worker = commands.add_parser("worker", help="run one shard of a planned CopyJob (inside a worker pod)")
    worker.set_defaults(handler=lambda _args: _worker())
    operator = commands.add_parser("operator", help="run the CopyJob operator")
    operator.add_argument("--namespace", action="append", default=[], help="watch only these namespaces")
    operator.set_defaults(handler=_operator)

    args = parser.parse_args(argv)
    if args.command == "operator":
        code: int = args.handler(args)  # kopf configures logging itself
        return code
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # botocore logs credentials-adjacent detail at debug; keep library chatter out of normal runs.
        logging.getLogger("botocore").setLevel(logging.WARNING)
    result: int = args.handler(args)
    return result


def _worker() -> int:
    from ferry.worker import pod

    return pod.main()


def _operator(args: argparse.Namespace) -> int:
    import kopf

    from ferry.operator import handlers

    namespaces = args.namespace or list(handlers.SETTINGS.watch_namespaces)
    kopf.configure(verbose=args.verbose)
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=f"http://0.0.0.0:{handlers.SETTINGS.liveness_port}/healthz",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
