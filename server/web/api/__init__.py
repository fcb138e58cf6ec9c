"""The HTTP API for the site's backend, and its OpenAPI description."""
