"""Appointments and requests for help: booking a slot, signed links, form answers."""
