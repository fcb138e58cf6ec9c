"""popin: on-site trigger marketing. A tiny widget, an async server, in-session rules."""

__version__ = "0.1.0"
