"""``raytrainer submit [--address URL] [--working-dir DIR] [--no-wait] -- train|tune ...``.

The command runs on the cluster as a Ray job (``python -m raytrainer train|tune ...``) with a
runtime environment that carries the working directory and, unless the working directory holds
it already or ``--no-package`` says the cluster has it installed, this raytrainer package. The
command and its config are checked here first; then the job's logs are followed until it ends,
Ctrl-C stops it, and the exit status is the job's.
"""

import argparse
import asyncio
import contextlib
import os
import shlex
import sys
import threading
import time

from .build import UsageError

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
DEFAULT_EXCLUDES = [".git", "**/__pycache__", "**/.ipynb_checkpoints"]
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPILOG = """The job's working directory is a copy of --working-dir: give the config and data paths
relative to it, and an absolute output_dir on storage every node sees (or run.storage_path),
so the checkpoints outlive the job. A cluster with token authentication (Ray's default) needs
RAY_AUTH_MODE=token and its token in RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH here.
Exit status: the job's (0 succeeded, its driver's exit code or 1 when it failed), 2 for a bad
command or config (nothing submitted), 3 when the job server cannot be reached, 130 after Ctrl-C."""


def add_parser(subparsers):
    parser = subparsers.add_parser("submit", help="run train or tune as a job on a Ray cluster", epilog=EPILOG,
                                   description="Submit 'raytrainer train|tune ...' to a Ray cluster (Ray Jobs).",
                                   formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--address", help="the job server (dashboard) URL; default $RAY_API_SERVER_ADDRESS, $RAY_ADDRESS or "
                        f"{DEFAULT_ADDRESS}")
    parser.add_argument("--working-dir", default=".", metavar="DIR", help="uploaded as the job's working "
                        "directory (default: the current directory; .gitignore is honoured)")
    parser.add_argument("--no-wait", action="store_true", help="print the job id and return once it is submitted")
    parser.add_argument("--job-id", help="the submission id (default: one Ray picks)")
    parser.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                        help="leave files out of the upload (repeatable; .git and __pycache__ always are)")
    parser.add_argument("--pip", action="append", default=[], metavar="REQUIREMENT",
                        help="install this for the job (repeatable)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="set for the job")
    parser.add_argument("--no-package", action="store_true",
                        help="do not ship raytrainer: the cluster has it installed")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- train|tune CONFIG ...")
    parser.set_defaults(run=run, accepts_overrides=False)
    return parser


def run(namespace, extra) -> int:
    command = list(namespace.command)
    if command[:1] == ["--"]:
        command = command[1:]
    working_dir = os.path.abspath(namespace.working_dir)
    check_job_command(command, working_dir)
    runtime_env = job_runtime_env(namespace, working_dir)
    entrypoint = "python -m raytrainer " + shlex.join(command)
    client, address = _client(namespace.address)
    if client is None:
        return EXIT_UNREACHABLE
    job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env, submission_id=namespace.job_id)
    print(f"submitted job {job_id} to {address}: {entrypoint}", flush=True)
    if namespace.no_wait:
        print(f"follow it with: ray job logs --address {address} --follow {job_id}\n"
              f"stop it with:   ray job stop --address {address} {job_id}")
        return 0
    return follow(client, job_id)


def check_job_command(command: list, working_dir: str) -> None:
    """Parse the job's command and check its config here, as it will be seen from the working
    directory on the cluster (user modules are not imported: their packages may live only there)."""
    if not os.path.isdir(working_dir):
        raise UsageError(f"--working-dir {working_dir!r} is not a folder.")
    if not command or command[0] not in ("train", "tune"):
        raise UsageError("give the command to run after '--': raytrainer submit [options] -- train CONFIG [...] "
                         "(or tune CONFIG --space ... --n-trials ...).")
    from . import build_parser
    from .build import arguments_class, training_arguments
    from .config import load_config

    namespace, overrides = _parse_inner(build_parser(), command)
    with _inside(working_dir):
        config = load_config(namespace.config)
        if command[0] == "tune":
            from .tune import check_options, load_space

            check_options(namespace)
            load_space(namespace.space)
        args_class = arguments_class(_seq2seq_or_plain(config))
        args = training_arguments(config, overrides, args_class, f"raytrainer {command[0]}")
    if not os.path.isabs(args.output_dir):
        print(f"raytrainer submit: note: output_dir {args.output_dir!r} is relative: the job writes it inside its "
              "copy of the working directory on the cluster; give an absolute path on shared storage to keep "
              "the checkpoints.", file=sys.stderr)


def _parse_inner(parser, command: list):
    try:
        namespace, overrides = parser.parse_known_args(command)
    except SystemExit as exit_:
        raise UsageError(f"the job's command {shlex.join(command)!r} does not parse (see above).") from exit_
    if getattr(namespace, "config", None) is None:
        raise UsageError(f"the job's command {shlex.join(command)!r} names no config file.")
    return namespace, overrides


def _seq2seq_or_plain(config):
    """The Trainer class as far as it can be known without importing the user's module."""
    from ..seq2seq import Seq2SeqTrainer
    from ..trainer import Trainer

    return Seq2SeqTrainer if "trainer" in config.data else Trainer


@contextlib.contextmanager
def _inside(folder: str):
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def job_runtime_env(namespace, working_dir: str) -> dict:
    env = {"working_dir": working_dir, "excludes": DEFAULT_EXCLUDES + list(namespace.exclude)}
    ships_itself = os.path.isfile(os.path.join(working_dir, "raytrainer", "__init__.py"))
    if not namespace.no_package and not ships_itself:
        env["py_modules"] = [_PACKAGE_DIR]
    if namespace.pip:
        env["pip"] = list(namespace.pip)
    variables = {}
    for item in namespace.env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--env {item!r}: write NAME=VALUE.")
        variables[name] = value
    if variables:
        env["env_vars"] = variables
    return env


def _client(address):
    from ray.job_submission import JobSubmissionClient

    # as Ray's own job CLI: the flag, then RAY_API_SERVER_ADDRESS, then RAY_ADDRESS
    address = address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS
    try:
        return JobSubmissionClient(address), address
    except Exception as error:  # noqa: BLE001 - connection, authentication and version errors alike
        print(f"raytrainer submit: cannot reach the Ray job server at {address}: {error}\n"
              "The job server is part of the dashboard: install ray[default] (pip install 'raytrainer[cluster]') "
              "on the head node and start it with the dashboard; for token authentication set RAY_AUTH_MODE=token "
              "and RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH.", file=sys.stderr)
        return None, address


_LAST_LINES_S = 10.0  # after the job ended, how long its last log lines may take to arrive


def follow(client, job_id: str, poll_s: float = 0.5) -> int:
    """Print the job's logs until it ends; Ctrl-C stops the job. Returns the exit status.

    The logs are tailed on a thread of their own while this thread polls the job's status: Ctrl-C
    always lands here, in a plain ``sleep``. (Inside ``asyncio.run`` it becomes a cancellation of
    the log tail, which the websocket client could swallow, and the command then hung.)"""
    printer = threading.Thread(target=_print_logs, args=(client, job_id), name="raytrainer-job-logs", daemon=True)
    printer.start()
    try:
        status = _wait_until_done(client, job_id, poll_s)
        printer.join(timeout=_LAST_LINES_S)
        return _exit_status(client, job_id, status)
    except KeyboardInterrupt:
        print(f"\nraytrainer submit: stopping job {job_id} ...", file=sys.stderr, flush=True)
        client.stop_job(job_id)
        status = _wait_until_done(client, job_id, poll_s, timeout_s=60)
        printer.join(timeout=_LAST_LINES_S)
        print(f"raytrainer submit: job {job_id} is {status}.", file=sys.stderr)
        return EXIT_INTERRUPTED


def _print_logs(client, job_id: str) -> None:
    async def tail():
        async for lines in client.tail_job_logs(job_id):
            sys.stdout.write(lines)
            sys.stdout.flush()

    try:
        asyncio.run(tail())
    except Exception as error:  # noqa: BLE001 - the job's status still decides the exit code
        print(f"raytrainer submit: the job's logs stopped arriving ({error}); waiting for the job to end.",
              file=sys.stderr, flush=True)


def _wait_until_done(client, job_id: str, poll_s: float, timeout_s: float = None):

    start = time.time()
    while True:
        status = client.get_job_status(job_id)
        if status.is_terminal() or (timeout_s is not None and time.time() - start > timeout_s):
            return status
        time.sleep(poll_s)


def _exit_status(client, job_id: str, status) -> int:
    from ray.job_submission import JobStatus

    if status == JobStatus.SUCCEEDED:
        return 0
    info = client.get_job_info(job_id)
    print(f"raytrainer submit: job {job_id} {status.value.lower()}: {info.message or ''}".rstrip(), file=sys.stderr)
    code = getattr(info, "driver_exit_code", None)
    return code if isinstance(code, int) and code > 0 else 1
