class ConfigError(ValueError):
    """A configuration value the pipeline refuses; the message names the key and the fix."""
