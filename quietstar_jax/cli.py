"""What every command-line entry point shares: flag parsing, --help and error reporting.

    if __name__ == "__main__":
        cli.run(main, usage="python -m quietstar_jax.x [--flag=VALUE ...]", define_flags=define_flags)
        # main(argv_rest) -> exit status (None = 0)

--help (-h, -?, --helpshort) prints the usage line, the command's docstring and its flags with their help
texts; --helpfull adds every other flag the process accepts (absl's logging flags, ...) and the fields of a
config file flag's default config. Both write to stdout and exit with status 0, whatever else is on the
command line. (absl.app.run defines these flags and exits with status 1; our commands parse with
flags.FLAGS(argv) instead, so the help is served here.)

A user error (a bad flag or config field, a missing or damaged file, a config that does not fit: any
QuietStarError) is printed as ONE line, "error: <what> <how to fix it>", and the process exits with
status 2; no traceback unless --debug is given. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
import re
import sys
import traceback
from typing import Callable

from absl import flags

from quietstar_jax.errors import QuietStarError

USAGE_ERROR = 2


def one_line(text: str) -> str:
    """An exception message as one line: escaped quotes and newlines of nested reprs flattened, the quotes
    of a message that is a quoted string (str(KeyError('x')) is "'x'") dropped; a quote that belongs to the
    message (Unknown command line flag 'helpp') is kept."""
    text = text.replace("\\n", "\n").replace("\\'", "'").strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"" and text[0] not in text[1:-1]:
        text = text[1:-1]
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
    if isinstance(e, flags.UnrecognizedFlagError):
        names = [*flags.FLAGS, *(h.lstrip("-") for h in HELP_FLAGS if h.startswith("--"))]
        close = difflib.get_close_matches(e.flagname, names, n=1)
        hint = f" (did you mean --{close[0]}?)" if close else ""
        return f"--{e.flagname}: no such flag{hint}; --help lists the flags"
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
        define_flags: Callable[[], None] | None = None, usage: str | None = None) -> None:
    """Defines (define_flags) and parses flags, runs main(positional args), turns QuietStarErrors into one
    line + exit status 2. --debug (anywhere on the command line): print tracebacks too. --help / --helpfull
    (anywhere before a "--"): print the help (`usage` is its first line) and exit with status 0.

    Flags are defined here, not at import: ml_collections' config_flags reads --config (and applies the
    --config.a.b overrides) as soon as the flag is defined, so its errors must be caught too."""
    argv = list(sys.argv if argv is None else argv)
    debug = "--debug" in argv[1:]
    argv = [a for a in argv if a != "--debug"]
    help_kind = help_request(argv)
    # config_flags reads sys.argv when the flag is defined. For help it sees the program name only: the help
    # shows the defaults and cannot fail on whatever else is on the command line.
    sys.argv = argv[:1] if help_kind else argv
    if define_flags is not None:
        try:
            define_flags()
        except Exception as e:  # noqa: BLE001 - config file errors surface here
            fail(_flag_error(e, argv), e, debug)
    if help_kind:
        sys.stdout.write(help_text(define_flags or main, usage, full=help_kind == "full"))
        sys.stdout.flush()
        sys.exit(0)
    rest = parse_flags(argv, debug)
    try:
        status = main(rest)
    except QuietStarError as e:
        fail(str(e), e, debug)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(status or 0)


# ----------------------------------------------------------------------------- --help
# absl's spellings: --help, -help, -? and --helpshort (the command's flags); --helpfull (every flag). -h too,
# as most command lines accept it.
HELP_FLAGS = {"--help": "short", "-help": "short", "-h": "short", "-?": "short", "--helpshort": "short",
              "-helpshort": "short", "--helpfull": "full", "-helpfull": "full"}


# Flags that libraries imported along the way define and the parser accepts, but that do nothing here:
# absl.app's act only under absl.app.run, absl.testing's and chex's only in their test runners. --helpfull
# leaves them out (absl.logging's, e.g. --verbosity, do work and are listed).
INERT_FLAG_MODULES = ("absl.app", "absl.testing", "chex")


def help_request(argv: list[str]) -> str | None:
    """"short" / "full" when the command line asks for help (before a "--" that ends the flags), else None."""
    for a in argv[1:]:
        if a == "--":
            return None
        if a in HELP_FLAGS:
            return HELP_FLAGS[a]
    return None


def _module_key(fn: Callable) -> str:
    """The name absl registers the flags defined by fn under: the module's name, or for __main__ (python -m
    quietstar_jax.x) the program path sys.argv[0]."""
    return sys.argv[0] if fn.__module__ == "__main__" else fn.__module__


def _render_flag(flag) -> str:
    name = f"--[no]{flag.name}" if flag.boolean else f"--{flag.name}"
    if flag.short_name:
        name = f"-{flag.short_name}, {name}"
    text = flags.text_wrap(f"{name}: {flag.help or ''}", indent="      ", firstline_indent="  ")
    # (config_flags shows a missing default as 'None': no default is shown for it, as for other flags)
    default = f"default: {flag.default_as_str}" if flag.default is not None and flag.default_as_str else ""
    for extra in (default, flag.parser.syntactic_help):
        if extra:
            text += "\n" + flags.text_wrap(f"({extra})", indent="      ")
    return text


def _config_fields(config, prefix: str = "") -> list[str]:
    """`a.b = value` for every leaf of a ConfigDict (an empty dict-valued field is a leaf: {})."""
    lines = []
    for k in sorted(config.keys()):
        v = config[k]
        if hasattr(v, "keys") and len(v):
            lines += _config_fields(v, f"{prefix}{k}.")
        else:
            lines.append(f"{prefix}{k} = {dict(v) if hasattr(v, 'keys') else v!r}")
    return lines


def help_text(fn: Callable, usage: str | None, full: bool = False) -> str:
    """The help of the command whose flags fn defined (its module's docstring follows the usage line)."""
    module = sys.modules.get(fn.__module__)
    prog = "python -m " + (getattr(module, "__spec__", None) and module.__spec__.name or fn.__module__)
    out = [f"usage: {usage or prog + ' [--flag=VALUE ...]'}", ""]
    doc = (getattr(module, "__doc__", None) or "").strip("\n")
    if doc:
        out += [doc, ""]
    key = _module_key(fn)
    own = flags.FLAGS.get_flags_for_module(key)
    out.append("flags:")
    out += [_render_flag(f) for f in own]
    fields = ", and every config field with its default" if any(_is_config(f) for f in own) else ""
    for line in ("--debug: on an error, print the traceback too",
                 f"-h, --help: this help (also -?, --helpshort); --helpfull: every flag, absl's too{fields}"):
        out.append(flags.text_wrap(line, indent="      ", firstline_indent="  "))
    if full:
        for m, fl in sorted(flags.FLAGS.flags_by_module_dict().items()):
            if m != key and fl and not m.startswith(INERT_FLAG_MODULES):
                out += ["", f"flags of {m}:"] + [_render_flag(f) for f in fl]
        out += ["", "flags of absl.flags:"]
        for line in ("--flagfile: read flags from this file (one --flag=VALUE per line)",
                     "--undefok: comma-separated flag names to accept without an error when they are not defined"):
            out.append(flags.text_wrap(line, indent="      ", firstline_indent="  "))
        for f in own:
            if _is_config(f):
                title = (f"config fields of --{f.name} (set any with --{f.name}.FIELD=VALUE; the values of the "
                         f"default, {f.default_as_str}):")
                out += ["", flags.text_wrap(title, indent="  ", firstline_indent="")]
                out += ["  " + line for line in _config_fields(f.default)]
    return "\n".join(out) + "\n"


def _is_config(flag) -> bool:
    """A config_flags config-file flag with a default config (its loaded ConfigDict; compile's --config has
    none)."""
    return type(flag.default).__name__ in ("ConfigDict", "FrozenConfigDict")
