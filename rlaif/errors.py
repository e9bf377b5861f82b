"""The exceptions rlaif raises, in one small hierarchy.

    RlaifError                   base of everything below
    ├── ConfigError              a judge/run/template config is invalid or missing
    ├── InputError               an input file or row is unusable (row errors are recorded, not raised)
    ├── ModelError               the model folder cannot be found, built or verified
    └── BackendError             a backend failed as a whole (engine start, server unreachable)

A failure that concerns a single item (an unparseable verdict, a prompt too long for the model) is never
raised: it becomes an unlabeled `Judgment` (or an unscored `ScoreRecord`) with its reason, and the rest of the
run goes on.
"""

from __future__ import annotations

__all__ = ["RlaifError", "ConfigError", "InputError", "ModelError", "BackendError"]


class RlaifError(Exception):
    """Base class of every error rlaif raises on purpose."""


class ConfigError(RlaifError):
    """A config file is missing, malformed, or names something that does not exist."""


class InputError(RlaifError):
    """An input file cannot be read at all (single bad rows are recorded instead)."""


class ModelError(RlaifError):
    """The model folder cannot be found, converted or verified."""


class BackendError(RlaifError):
    """A backend failed as a whole: the engine did not start or the server is unreachable."""
