"""Provider per channel, chosen by settings (EMAIL_PROVIDER, SMS_PROVIDER, PUSH_PROVIDER)."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from notifications.models import Channel
from notifications.providers.base import OutboundMessage, Provider
from notifications.providers.console import ConsoleProvider
from notifications.providers.emails import DjangoEmailProvider
from notifications.providers.push import FcmProvider
from notifications.providers.sms import Msg91Provider, TwilioProvider

_SMS: dict[str, type[Provider]] = {"twilio": TwilioProvider, "msg91": Msg91Provider, "console": ConsoleProvider}
_PUSH: dict[str, type[Provider]] = {"fcm": FcmProvider, "console": ConsoleProvider}


def get_provider(channel: str) -> Provider:
    """Built per call, so a settings change (or override_settings in a test) takes effect at once."""
    if channel == Channel.EMAIL:
        return DjangoEmailProvider()
    table, setting = (_SMS, "SMS_PROVIDER") if channel == Channel.SMS else (_PUSH, "PUSH_PROVIDER")
    if channel not in (Channel.SMS, Channel.PUSH):
        raise ImproperlyConfigured(f"no provider for channel {channel!r}")
    name = getattr(settings, setting)
    try:
        return table[name]()
    except KeyError:
        raise ImproperlyConfigured(f"{setting}={name!r}; use one of {', '.join(table)}") from None


__all__ = ["OutboundMessage", "Provider", "get_provider"]
