"""Settings: where the store and rules are, which sites may connect from where, and the
limits; read from an optional `popin.toml` and checked at start (`loader`)."""

from .loader import load_settings
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

__all__ = ["DEFAULT_RULES", "PROJECT_ROOT", "STATIC_DIR", "ConfigError", "Limits", "Settings",
           "WebhookSettings", "load_secret", "load_settings"]
