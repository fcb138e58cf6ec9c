"""Settings: where the store and rules are, which sites may connect from where, and the
limits; read from an optional `popin.toml` and checked at start (`loader`)."""

from .loader import CONFIG_FILE, CONFIG_VARIABLE, find_config, load_settings
from .settings import (
    DEFAULT_RULES,
    PROJECT_ROOT,
    STATIC_DIR,
    ConfigError,
    Limits,
    Settings,
    WebhookSettings,
    load_secret,
)

__all__ = ["CONFIG_FILE", "CONFIG_VARIABLE", "DEFAULT_RULES", "PROJECT_ROOT", "STATIC_DIR",
           "ConfigError", "Limits", "Settings", "WebhookSettings", "find_config", "load_secret",
           "load_settings"]
