"""User-facing errors.

Every mistake a user can make (bad config, bad data row, failing reward function) raises a subclass of
`RftuneError` whose message says what was wrong and where. The CLI prints these without a traceback and exits
non-zero; anything else is a bug and keeps its traceback.
"""


class RftuneError(Exception):
    """Base class for errors caused by user input rather than by a bug in rftune."""


class ConfigError(RftuneError):
    """A config file or override is invalid (unknown key, wrong type, out of range, inconsistent values)."""


class DataError(RftuneError):
    """A dataset file or row is malformed; the message names the file and the row."""


class RewardError(RftuneError):
    """A reward function raised or returned something unusable; the message names the function and the sample."""


class RepositoryError(RftuneError):
    """A model-repository reference or operation is invalid (unknown name, version or tag; broken files)."""


class StorageError(RftuneError):
    """A file could not be written (disk full, read-only folder) or read back intact (damaged, cut short); the
    message names the file or folder."""
