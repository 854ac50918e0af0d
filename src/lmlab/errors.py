"""The errors a user can act on. The CLI prints their message on one line and exits with status 2."""


class LmlabError(Exception):
    """Base for every error caused by the user's input rather than by a bug in lmlab."""


class DataError(LmlabError):
    """A data source is missing, empty, binary, badly encoded or too small. `plain`: the message without what
    it quotes of the file (its field names), where one does: said instead when the file was named by a run's
    config.json, which may point anywhere, rather than by the user."""

    def __init__(self, message: str, plain: str | None = None):
        super().__init__(message)
        self.plain = plain


class ConfigError(LmlabError):
    """A configuration value is unknown, of the wrong type or out of range."""


class CheckpointError(LmlabError):
    """A run directory or checkpoint is missing, corrupted or does not match."""


class TrainingDiverged(LmlabError):
    """The loss or gradients stayed non-finite; the last good checkpoint is kept. `findings`: what the
    inspector saw, when the pipeline ran one (the command line prints them before the error)."""

    findings: list | None = None


class TokenizerError(LmlabError):
    """Text cannot be encoded with this tokenizer (for example characters outside its vocabulary)."""


def check_count(value: int, name: str, limit: int, *, least: int = 1) -> int:
    """`value`, or ConfigError naming `name` and its bounds: the one check every count a user gives (seeds,
    horizon, samples, iterations, new tokens, trials) passes before any work starts, so a typo of a few zeros
    is refused at once instead of running for days or filling the disk."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be a whole number, got {value!r:.40}")
    if value < least:
        raise ConfigError(f"{name} must be at least {least:,}, got {value:,}")
    if value > limit:
        raise ConfigError(f"{name} must be at most {limit:,}, got {value:,}")
    return value
