"""What combines the core with a store: appointments and leads, audience exports,
webhook delivery, campaign lift. Features do not import one another."""
