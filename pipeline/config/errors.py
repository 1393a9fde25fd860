"""The two ways the pipeline refuses to go on, and their exit codes (one place: `exit_code`).

- `ConfigError`: bad input (a config value, a flag, a dataset, a schedule, a launch request). The person who
  ran it fixes the input; retrying as is cannot help. Exit code 2, like argparse and ML-Agents' own
  `TrainerConfigError`. Domain errors that are bad input derive from it (ScheduleError, CronError, RequestError,
  DatasetError, PolicyContractError, VertexError).
- `ServiceUnavailable`: a service the run needs did not answer (a Vertex AI endpoint, a database that refuses
  connections). The input may well be right; retrying later can help. Exit code 1, like any failed run.
"""

EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 1


class ConfigError(ValueError):
    """A configuration value the pipeline refuses; the message names the key and the fix."""


class ServiceUnavailable(RuntimeError):
    """A service the run needs could not be reached or did not answer; the message names it and what to check."""


def exit_code(exc: BaseException) -> int | None:
    """The process exit code for an error of ours; None for anything else (the caller's own handling)."""
    if isinstance(exc, ConfigError):
        return EXIT_BAD_INPUT
    if isinstance(exc, ServiceUnavailable):
        return EXIT_UNAVAILABLE
    return None
