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

    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # botocore logs credentials-adjacent detail at debug; keep library chatter out of normal runs.
        logging.getLogger("botocore").setLevel(logging.WARNING)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
