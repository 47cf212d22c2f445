"""The runtime's kinds of user-caused error (torch-free, so the command line can name them).

Each is a `spacec.errors.ReportedError`: the command line prints the message and exits 1.
"""

from __future__ import annotations

from spacec.errors import ReportedError


class DataError(ReportedError):
    """Any problem with data on disk or a data configuration; the message names path and cause."""


class ConfigError(ReportedError, ValueError):
    """A configuration file or override is malformed; the message names the file and the key."""


class CheckpointError(ReportedError):
    """A checkpoint is missing, unreadable, or does not belong to the run; names path and cause."""


class TrainingError(ReportedError):
    """Training cannot go on (a non-finite loss); the last checkpoint on disk is intact."""


class DistributedError(ReportedError):
    """A run on several processes cannot go on (another process stopped, a collective timed
    out); the last checkpoint on disk is intact."""
