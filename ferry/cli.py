"""The `ferry` command: `ferry run` and `ferry plan` (a CopyJob on this machine), `ferry worker`,
`ferry planner`, `ferry notify` and `ferry operator` (in pods)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import NoReturn


class _Parser(argparse.ArgumentParser):
    """argparse's parser, except that a usage error of `ferry run|plan ... --output json` also puts a JSON
    error document on stdout (exit 2), so a script can parse stdout whatever happened."""

    json_errors = False

    def error(self, message: str) -> NoReturn:
        if _Parser.json_errors:
            from ferry.worker.run import EXIT_INVALID, error_json

            print(json.dumps(error_json(f"{self.prog}: {message}", EXIT_INVALID), indent=2))
        super().error(message)


def _asks_json(argv: list[str]) -> bool:
    """Whether the command line asks for JSON output (read before parsing, for parse errors)."""
    pairs = zip(argv, [*argv[1:], ""], strict=True)
    return "--output=json" in argv or any(a == "--output" and b == "json" for a, b in pairs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ferry", description="Bulk S3-to-S3 copy jobs.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details to stderr")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    from ferry.worker import run

    run_parser = commands.add_parser(
        "run",
        help="run a CopyJob on this machine",
        description=run.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_arguments(run_parser)
    run_parser.set_defaults(handler=run.run_cli)

    from ferry.worker import plancmd

    plan_parser = commands.add_parser(
        "plan",
        help="plan a CopyJob on this machine: what it would copy, skip, take and cost",
        description=plancmd.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    plancmd.add_arguments(plan_parser)
    plan_parser.set_defaults(handler=plancmd.plan_cli)

    worker = commands.add_parser(
        "worker",
        help="run one shard of a planned CopyJob (inside a worker pod)",
        description="Run one shard of a planned CopyJob; configured by the pod's environment and plan.",
    )
    worker.set_defaults(handler=lambda _args: _worker())
    from ferry.worker import notify

    notify_parser = commands.add_parser(
        "notify",
        help="send a CopyJob's completion event to its webhook (inside a notify pod)",
        description=notify.main.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    notify.add_arguments(notify_parser)
    planner = commands.add_parser(
        "planner",
        help="check the locations and list the source of a CopyJob (inside a planner pod)",
        description="Plan a CopyJob in its own namespace; configured by the pod's environment and spec.",
    )
    planner.set_defaults(handler=lambda _args: _planner())
    operator = commands.add_parser(
        "operator", help="run the CopyJob operator", description="Run the CopyJob operator (kopf)."
    )
    operator.add_argument("--namespace", action="append", default=[], help="watch only these namespaces")
    operator.set_defaults(handler=_operator)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _Parser.json_errors = _asks_json(argv)
    args = build_parser().parse_args(argv)
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


def _planner() -> int:
    from ferry.worker import planpod

    return planpod.main()


def _operator(args: argparse.Namespace) -> int:
    import kopf

    from ferry.operator import handlers

    namespaces = args.namespace or list(handlers.SETTINGS.watch_namespaces)
    kopf.configure(verbose=args.verbose)
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=_http_url(
            handlers.SETTINGS.listen_address, handlers.SETTINGS.liveness_port, "/healthz"
        ),
    )
    return 0


def _http_url(address: str, port: int, path: str) -> str:
    """An http URL of an IP address; IPv6 ones in brackets, as URLs spell them."""
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}{path}"


if __name__ == "__main__":
    sys.exit(main())
