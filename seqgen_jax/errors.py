"""Exceptions for bad user input; entrypoints print them as a single line."""


class SeqgenError(ValueError):
  """A problem with the user's configuration, flags or data; its message is one line."""


class ConfigError(SeqgenError):
  """The config asks for something that does not exist or does not fit together."""


class DataError(SeqgenError):
  """A data file or directory is missing or corrupt."""
