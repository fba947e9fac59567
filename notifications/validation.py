"""Address checks shared by `notify` (to fail early) and delivery (to never send to garbage)."""

from __future__ import annotations

import re

import phonenumbers
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from notifications.exceptions import InvalidAddress

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


def email_validate(address: str) -> str:
    try:
        validate_email(address)
    except ValidationError:
        raise InvalidAddress(f"malformed email address {address!r}") from None
    return address


def phone_validate(number: str) -> str:
    """An E.164 number (`+14155552671`) that libphonenumber knows to be valid."""
    if not _E164.match(number):
        raise InvalidAddress(f"phone number {number!r} is not in E.164 form, such as +14155552671")
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        raise InvalidAddress(f"phone number {number!r} cannot be parsed") from None
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidAddress(f"phone number {number!r} is not a valid number")
    return number


def looks_like_email(address: str) -> bool:
    return "@" in address
