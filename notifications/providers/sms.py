"""SMS through Twilio's and MSG91's HTTP APIs."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from notifications.exceptions import InvalidAddress
from notifications.providers.base import OutboundMessage, http_post, permanent_http_error

# Twilio error codes that say the number itself is wrong, as opposed to our request.
TWILIO_INVALID_NUMBER_CODES = {21211, 21214, 21217, 21219, 21401, 21407, 21408, 21610, 21612, 21614}


class TwilioProvider:
    """POST /2010-04-01/Accounts/{sid}/Messages.json with HTTP basic auth."""

    name = "twilio"

    def send(self, message: OutboundMessage) -> str:
        sid = settings.TWILIO_ACCOUNT_SID
        url = f"{settings.TWILIO_BASE_URL.rstrip('/')}/2010-04-01/Accounts/{sid}/Messages.json"
        form = {"To": message.to, "Body": message.body}
        if settings.TWILIO_MESSAGING_SERVICE_SID:
            form["MessagingServiceSid"] = settings.TWILIO_MESSAGING_SERVICE_SID
        else:
            form["From"] = settings.TWILIO_FROM_NUMBER
        response = http_post(
            url, timeout=settings.SMS_TIMEOUT_SECONDS, data=form, auth=(sid, settings.TWILIO_AUTH_TOKEN)
        )
        payload = _json(response)
        if response.status_code >= 400:
            code = payload.get("code")
            detail = f"Twilio error {code}: {payload.get('message', response.text[:300])}"
            if code in TWILIO_INVALID_NUMBER_CODES:
                raise InvalidAddress(detail)
            raise permanent_http_error(response, detail)
        return str(payload.get("sid", ""))


class Msg91Provider:
    """POST /api/v2/sendsms with the `authkey` header (transactional route by default)."""

    name = "msg91"

    def send(self, message: OutboundMessage) -> str:
        url = f"{settings.MSG91_BASE_URL.rstrip('/')}/api/v2/sendsms"
        body: dict[str, Any] = {
            "sender": settings.MSG91_SENDER_ID,
            "route": settings.MSG91_ROUTE,
            # "0": the numbers carry their own country code (E.164 without the plus).
            "country": "0",
            "unicode": 1,
            "sms": [{"message": message.body, "to": [message.to.lstrip("+")]}],
        }
        if settings.MSG91_DLT_TE_ID:
            body["DLT_TE_ID"] = settings.MSG91_DLT_TE_ID
        response = http_post(
            url,
            timeout=settings.SMS_TIMEOUT_SECONDS,
            json=body,
            headers={"authkey": settings.MSG91_AUTH_KEY, "accept": "application/json"},
        )
        payload = _json(response)
        # MSG91 may answer 200 with {"type": "error"}: the body decides, not the status alone.
        if response.status_code >= 400 or payload.get("type") != "success":
            raise permanent_http_error(response, f"MSG91 error: {payload.get('message', response.text[:300])}")
        return str(payload.get("message", ""))


def _json(response: Any) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
