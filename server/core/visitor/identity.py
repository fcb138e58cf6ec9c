"""Who a visitor is to the site: traits normalised, contact details kept only as SHA-256
hashes (they serve audience matching, never display), and profiles merged when one
user turns out to have two visitor ids (a second device)."""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import fields
from typing import Any

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from ..site import CONSENT_LEVELS
from ..wire.events import Scalar
from .profile import Profile, RuleHistory

TRAITS = ("first_name", "birthday", "email", "phone")
MAX_NAME = 100
_BIRTHDAY = re.compile(r"\A(?:(\d{4})-)?(\d{2})-(\d{2})\Z")


class TraitError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def normal_email(raw: str) -> str:
    """Trimmed and lower-cased, after checking it is an address at all."""
    try:
        checked = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError as error:
        raise TraitError("traits.email", str(error)) from None
    return str(checked.normalized).lower()


def google_email(email: str) -> str:
    """Google's Customer Match form: Gmail ignores dots in the local part, so Google
    matches on the address without them."""
    local, _, domain = email.partition("@")
    if domain in ("gmail.com", "googlemail.com"):
        return f"{local.replace('.', '')}@{domain}"
    return email


def normal_phone(raw: str, region: str) -> str:
    """E.164 (+33612345678); a national number is read in the site's country."""
    try:
        number = phonenumbers.parse(raw.strip(), region or None)
    except phonenumbers.NumberParseException as error:
        raise TraitError("traits.phone", str(error)) from None
    if not phonenumbers.is_possible_number(number):
        raise TraitError("traits.phone", f"{raw!r} is not a possible phone number")
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def apply_traits(profile: Profile, traits: dict[str, Scalar], region: str = "FR") -> list[str]:
    """Check every trait first (nothing is changed if one is wrong), then store them;
    return the names stored."""
    unknown = [name for name in traits if name not in TRAITS]
    if unknown:
        raise TraitError(f"traits.{unknown[0]}", f"unknown trait; expected {', '.join(TRAITS)}")
    updates: dict[str, str] = {}
    for name, value in traits.items():
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise TraitError(f"traits.{name}", "must be text")
        if name == "first_name":
            if len(value.strip()) > MAX_NAME:
                raise TraitError("traits.first_name", f"at most {MAX_NAME} characters")
            updates["first_name"] = value.strip()
        elif name == "birthday":
            match = _BIRTHDAY.match(value.strip())
            if not match or not (1 <= int(match[2]) <= 12 and 1 <= int(match[3]) <= 31):
                raise TraitError("traits.birthday", "must be YYYY-MM-DD or MM-DD")
            updates["birthday"] = value.strip()
        elif name == "email":
            email = normal_email(value)
            updates["email_sha256"] = sha256(email)
            updates["email_google_sha256"] = sha256(google_email(email))
        else:
            phone = normal_phone(value, region)
            updates["phone_sha256"] = sha256(phone)
            updates["phone_digits_sha256"] = sha256(phone.lstrip("+"))
    for name, value in updates.items():
        setattr(profile, name, value)
    return sorted(updates)


def merge_into(kept: Profile, other: Profile) -> None:
    """Fold a second device's profile into the one the user already had."""
    kept.visits += other.visits
    kept.first_seen = min(x for x in (kept.first_seen, other.first_seen) if x) if (
        kept.first_seen or other.first_seen) else 0.0
    kept.last_seen = max(kept.last_seen, other.last_seen)
    for keyword, seconds in other.interests.items():
        kept.interests[keyword] = kept.interests.get(keyword, 0.0) + seconds
    for rule, history in other.popins.items():
        mine = kept.popins.setdefault(rule, RuleHistory())
        mine.shown = sorted({*mine.shown, *history.shown})[-20:]
        mine.dismissed = _latest(mine.dismissed, history.dismissed)
        mine.clicked = _latest(mine.clicked, history.clicked)
        mine.held_out = _latest(mine.held_out, history.held_out)
        mine.exposed = _latest(mine.exposed, history.exposed)
        mine.converted = _latest(mine.converted, history.converted)
        mine.confirmed = _latest(mine.confirmed, history.confirmed)
    kept.exposures = sorted({*kept.exposures, *other.exposures})[-50:]
    for audience, until in other.audiences.items():
        kept.audiences[audience] = max(kept.audiences.get(audience, 0.0), until)
    for sku, line in other.cart.items():
        kept.cart.setdefault(sku, line)
    # What either device's visitor withheld stays withheld until they say otherwise.
    kept.withheld = [level for level in CONSENT_LEVELS
                     if level in kept.withheld or level in other.withheld]
    for name in ("first_name", "birthday", "email_sha256", "phone_sha256", "email_google_sha256",
                 "phone_digits_sha256", "user_id"):
        if not getattr(kept, name) and getattr(other, name):
            setattr(kept, name, getattr(other, name))


def _latest(first: float | None, second: float | None) -> float | None:
    present = [moment for moment in (first, second) if moment is not None]
    return max(present) if present else None


def public_profile(profile: Profile) -> dict[str, Any]:
    """Everything stored about a visitor, as the owner may read it."""
    data: dict[str, Any] = {entry.name: getattr(profile, entry.name)
                              for entry in fields(Profile)}
    data["popins"] = {rule: {name: getattr(history, name) for name in RuleHistory.__slots__}
                      for rule, history in profile.popins.items()}
    data["cart"] = {sku: {"name": line.name, "price": line.price, "quantity": line.quantity}
                    for sku, line in profile.cart.items()}
    return data


def user_hash(secret: str, user_id: str) -> str:
    """What the site's backend prints into the page for its logged-in user."""
    return hmac.new(secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()


def verify_user_hash(secret: str, user_id: str, given: str) -> bool:
    """Did the site's backend sign this user id? Constant time; no secret, no trust."""
    if not secret or not given:
        return False
    return hmac.compare_digest(user_hash(secret, user_id), given.lower())
