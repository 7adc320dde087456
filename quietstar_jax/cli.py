"""What every command-line entry point shares: flag parsing and error reporting.

    if __name__ == "__main__":
        cli.run(main)          # main(argv_rest) -> exit status (None = 0)

A user error (a bad flag or config field, a missing or damaged file, a config that does not fit: any
QuietStarError) is printed as ONE line, "error: <what> <how to fix it>", and the process exits with
status 2; no traceback unless --debug is given. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import re
import sys
import traceback
from typing import Callable

from absl import flags

from quietstar_jax.errors import QuietStarError

USAGE_ERROR = 2


def one_line(text: str) -> str:
    """An exception message as one line: escaped quotes and newlines of nested reprs flattened."""
    text = text.replace("\\n", "\n").replace("\\'", "'").strip().strip("'\"")
    return re.sub(r"\s*\n\s*", "; ", text).strip("; ")


def fail(message: str, exc: BaseException | None = None, debug: bool = False, status: int = USAGE_ERROR):
    if debug and exc is not None:
        traceback.print_exception(exc)
    print(f"error: {one_line(message)}", file=sys.stderr, flush=True)
    sys.exit(status)


def _flag_error(e: Exception, argv: list[str]) -> str:
    """A readable message for an error raised while parsing flags (absl or ml_collections config_flags)."""
    msg = one_line(str(e))
    did_you_mean = re.search(r'Did you mean "([\w.]+)" instead of "([\w.]+)"', msg)
    if did_you_mean:
        good, bad = did_you_mean.groups()
        flag = next((a.split("=")[0] for a in argv if re.search(rf"\.{re.escape(bad)}(=|$)", a)), f"--config...{bad}")
        return f"{flag}: no such config field (did you mean {good!r}?); the fields are listed in " \
               "quietstar_jax/training/config.py"
    if isinstance(e, (KeyError, AttributeError)):
        key = msg.split(";")[0].strip("'\"")
        flag = next((a.split("=")[0] for a in argv if a.split("=")[0].endswith("." + key)), None)
        return f"{flag or key}: no such config field; the fields are listed in quietstar_jax/training/config.py"
    missing = re.search(r"No such file or directory: '([^']+)", msg)
    if missing:
        return f"--config={missing.group(1)}: no such config file (configs/*.py, or a path to one)"
    return msg if msg.startswith(("flag", "--")) else f"bad command line: {msg}"


def parse_flags(argv: list[str], debug: bool = False) -> list[str]:
    """absl flags (incl. --config files and --config.a.b overrides); returns the positional args."""
    try:
        return flags.FLAGS(argv)
    except Exception as e:  # noqa: BLE001 - absl and config_flags raise assorted types
        fail(_flag_error(e, argv), e, debug)


def loaded_config(config):
    """The --config flag's value, checked: ml_collections defers a config file that failed to load until
    the first attribute access, which would otherwise surface as a traceback deep inside main."""
    try:
        config.keys()
    except Exception as e:  # noqa: BLE001 - OSError / errors raised while executing the config file
        fail(_flag_error(e, sys.argv), e, "--debug" in sys.argv)
    return config


def run(main: Callable[[list[str]], int | None], argv: list[str] | None = None,
        define_flags: Callable[[], None] | None = None) -> None:
    """Defines (define_flags) and parses flags, runs main(positional args), turns QuietStarErrors into one
    line + exit status 2. --debug (anywhere on the command line): print tracebacks too.

    Flags are defined here, not at import: ml_collections' config_flags reads --config (and applies the
    --config.a.b overrides) as soon as the flag is defined, so its errors must be caught too."""
    argv = list(sys.argv if argv is None else argv)
    debug = "--debug" in argv[1:]
    argv = [a for a in argv if a != "--debug"]
    sys.argv = argv  # config_flags reads sys.argv when the flag is defined
    if define_flags is not None:
        try:
            define_flags()
        except Exception as e:  # noqa: BLE001 - config file errors surface here
            fail(_flag_error(e, argv), e, debug)
    rest = parse_flags(argv, debug)
    try:
        status = main(rest)
    except QuietStarError as e:
        fail(str(e), e, debug)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(status or 0)
