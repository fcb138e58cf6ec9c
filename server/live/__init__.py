"""The running server's state: live sessions of every site, the current rules and their
reload. Pipes events from the web shell to the core and effects to the stores."""
