"""The ``raytrainer`` command: ``train``, ``tune``, ``submit`` and ``results``.

Exit status (for scripts): 0 success; 1 the run, the sweep or the job failed (or there were no
results to show); 2 a bad command line or config, reported before anything started; 3 the job
server could not be reached; 130 interrupted (Ctrl-C).
"""

import argparse
import os
import sys
import traceback

from . import results, submit, train, tune
from .build import UsageError
from .config import ConfigError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EPILOG = """exit status: 0 success, 1 the run/sweep/job failed, 2 bad command line or config
(nothing started), 3 job server unreachable, 130 interrupted.
'raytrainer COMMAND --help' describes each command."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raytrainer", epilog=EPILOG, allow_abbrev=False,
                                     description="The Hugging Face Trainer API on Ray: train, sweep, submit jobs.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"raytrainer {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="{train,tune,submit,results}")
    for module in (train, tune, submit, results):
        module.add_parser(commands)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("raytrainer")
    except PackageNotFoundError:
        return "unknown"


def main(argv=None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    parser = build_parser()
    try:
        namespace, extra = parser.parse_known_args(sys.argv[1:] if argv is None else list(argv))
    except SystemExit as exit_:  # --help, --version, or argparse's own usage error (2)
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    if namespace.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    prog = f"raytrainer {namespace.command}"
    if extra and not namespace.accepts_overrides:
        print(f"{prog}: error: unrecognised arguments: {' '.join(extra)}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return namespace.run(namespace, extra)
    except (ConfigError, UsageError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader of our output went away (| head): nothing left to say
        sys.stdout = open(os.devnull, "w")
        return EXIT_FAILED
    except Exception as error:  # noqa: BLE001 - a failed run: the traceback, then a one-line verdict
        traceback.print_exc()
        print(f"{prog}: failed: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_FAILED
