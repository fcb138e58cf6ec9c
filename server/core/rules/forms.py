"""The forms inside assistance and appointment pop-ins.

An assistance offer carries its lead form from load time; appointment slots carry a
mark that is replaced by the free times when the push leaves (they need the store).
A submitted form comes back as one message, answered by
`popin.features.appointments.answers` with the same form and its errors, or a
confirmation. Rendered with the same sandboxed, autoescaping environment.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from markupsafe import Markup

from ..calendar import Calendar, Slot, by_day
from .templates import ENVIRONMENT

# Where the free times go in a slots card; filled in before the push leaves.
SLOTS_MARK = "<!--popin:slots-->"

LEAD_LABELS = {"callback": "Call me back", "video": "A video call", "email": "Answer by e-mail",
               "chat": "Chat"}
MEET_LABELS = {"phone": "By phone", "video": "By video", "store": "In the shop"}

_PERSON = """
<label>Your name <input name="name" required maxlength="100" autocomplete="name"
  value="{{ values.name }}"></label>{{ error("name") }}
<label>Phone or e-mail <input name="contact" required maxlength="200" autocomplete="tel"
  value="{{ values.contact }}"></label>{{ error("contact") }}
<label class="consent"><input type="checkbox" name="consent" value="yes" required>
  I agree to be contacted about this request.</label>{{ error("consent") }}
"""

LEAD_FORM = ENVIRONMENT.from_string("""
<form class="form" data-popin-form="lead" novalidate>
<fieldset><legend>How can we help?</legend>
{% for channel in channels %}<label class="choice"><input type="radio" name="channel"
 value="{{ channel }}" required{% if loop.first %} checked{% endif %}> {{ labels[channel] }}</label>
{% endfor %}</fieldset>{{ error("channel") }}
""" + _PERSON + """
<label>Message (optional) <textarea name="message" maxlength="1000"
  rows="2">{{ values.message }}</textarea></label>
{{ error("message") }}
<button type="submit" class="cta">Send</button>
</form>""")

SLOTS_FORM = ENVIRONMENT.from_string("""
{% if notice %}<p class="notice">{{ notice }}</p>{% endif %}
{% if not days %}<p>No time is free in the coming days; please try again later.</p>{% else %}
<form class="form" data-popin-form="book" novalidate>
<div class="days">{% for day, day_slots in days %}<fieldset class="day"><legend>{{ day }}</legend>
{% for slot in day_slots %}<label class="slot"><input type="radio" name="slot"
 value="{{ slot.start }}" required> {{ slot.time }}</label>{% endfor %}</fieldset>{% endfor %}</div>
{{ error("slot") }}
<fieldset><legend>How shall we meet?</legend>{% for channel in channels %}<label class="choice">
<input type="radio" name="channel" value="{{ channel }}" required
 {%- if loop.first %} checked{% endif %}> {{ labels[channel] }}</label>{% endfor %}</fieldset>
{{ error("channel") }}
""" + _PERSON + """
<button type="submit" class="cta">Book this time</button>
</form>{% endif %}""")

def _errors(errors: dict[str, str]) -> object:
    def error(field: str) -> Markup:
        message = errors.get(field)
        return Markup('<p class="error" role="alert">{}</p>').format(message) if message else (
            Markup(""))

    return error


def lead_form(channels: tuple[str, ...], values: dict[str, str] | None = None,
              errors: dict[str, str] | None = None) -> str:
    return LEAD_FORM.render(channels=channels, labels=LEAD_LABELS, values=values or {},
                            error=_errors(errors or {}))


def when(start: float, zone: ZoneInfo) -> str:
    moment = datetime.fromtimestamp(start, zone)
    return f"{moment:%A %d %B, %H:%M} ({moment.tzname()})"


def slots_form(calendar: Calendar, free: list[Slot], zone: ZoneInfo,
               values: dict[str, str] | None = None, errors: dict[str, str] | None = None,
               notice: str = "") -> str:
    days = [(f"{day:%A %d %B}", [{"start": repr(slot.start),
                                  "time": f"{slot.local(zone):%H:%M}"} for slot in day_slots])
            for day, day_slots in by_day(free, zone)]
    return SLOTS_FORM.render(days=days, channels=calendar.channels, labels=MEET_LABELS,
                             values=values or {}, error=_errors(errors or {}), notice=notice)
