"""The owner's dashboard at /admin."""
