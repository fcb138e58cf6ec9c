"""Signed, expiring links a visitor keeps for an appointment: the .ics invitation and
the page to cancel or reschedule it. Signed with itsdangerous; nothing to guess."""

from __future__ import annotations

from itsdangerous import BadSignature, URLSafeTimedSerializer

from ...stores.bookings import Booking

# A link works until well after the appointment; past that it says so.
LINK_MAX_AGE = 60 * 86400


class Links:
    def __init__(self, secret: str) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="popin-booking")

    def token(self, booking: Booking) -> str:
        return self._serializer.dumps([booking.site, booking.id])

    def read(self, token: str) -> tuple[str, str] | None:
        try:
            site, booking_id = self._serializer.loads(token, max_age=LINK_MAX_AGE)
        except (BadSignature, ValueError, TypeError):
            return None
        return str(site), str(booking_id)

    def ics(self, booking: Booking) -> str:
        return f"/bookings/{self.token(booking)}/invite.ics"

    def manage(self, booking: Booking) -> str:
        return f"/bookings/{self.token(booking)}"
