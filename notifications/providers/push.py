"""Push through FCM HTTP v1: POST /v1/projects/{project}/messages:send with an OAuth2 bearer token."""

from __future__ import annotations

import json
import time
from typing import Any

from django.conf import settings

from notifications.exceptions import PermanentProviderError, TransientProviderError
from notifications.providers.base import OutboundMessage, http_post, permanent_http_error

# FCM says these mean the token will never work again (for our project): deactivate the device.
DEAD_TOKEN_CODES = {"UNREGISTERED", "SENDER_ID_MISMATCH"}
_TOKEN_CACHE_KEY = "notifications:fcm:access_token"  # noqa: S105 - a Redis key name, not a secret


class FcmProvider:
    name = "fcm"

    def send(self, message: OutboundMessage) -> str:
        url = f"{settings.FCM_BASE_URL.rstrip('/')}/v1/projects/{settings.FCM_PROJECT_ID}/messages:send"
        fcm_message: dict[str, Any] = {
            "token": message.to,
            "notification": {"title": message.subject, "body": message.body},
        }
        if message.data:
            fcm_message["data"] = {str(k): str(v) for k, v in message.data.items()}
        if message.reference:
            # Without an idempotency key in FCM, a collapse key makes a rare duplicate replace the first.
            collapse = message.reference[-64:]
            fcm_message["android"] = {"collapse_key": collapse}
            fcm_message["apns"] = {"headers": {"apns-collapse-id": collapse}}
        response = http_post(
            url,
            timeout=settings.PUSH_TIMEOUT_SECONDS,
            json={"message": fcm_message},
            headers={"Authorization": f"Bearer {fcm_access_token()}"},
        )
        if response.status_code == 401:
            # The cached access token expired or was revoked early: mint a new one on the retry.
            _forget_access_token()
            raise TransientProviderError(
                f"FCM 401: access token rejected, a new one will be used: {response.text[:300]}"
            )
        if response.status_code >= 400:
            code, status, text = _fcm_error(response)
            dead = code in DEAD_TOKEN_CODES or (status == "INVALID_ARGUMENT" and "registration token" in text.lower())
            if dead:
                raise PermanentProviderError(f"FCM {code or status}: token is no longer valid", deactivate_device=True)
            raise permanent_http_error(response, f"FCM {code or status}: {text}")
        return str(response.json().get("name", ""))


def _fcm_error(response: Any) -> tuple[str, str, str]:
    try:
        error = response.json().get("error", {})
    except ValueError:
        return "", "", response.text[:300]
    code = ""
    for detail in error.get("details", []) or []:
        if isinstance(detail, dict) and detail.get("errorCode"):
            code = str(detail["errorCode"])
    return code, str(error.get("status", "")), str(error.get("message", ""))


def fcm_access_token() -> str:
    """A bearer token: FCM_ACCESS_TOKEN when set, else one minted from the service account.

    A minted token is cached in Redis until shortly before it expires, so workers share it.
    """
    if settings.FCM_ACCESS_TOKEN:
        return str(settings.FCM_ACCESS_TOKEN)
    if not settings.FCM_SERVICE_ACCOUNT_FILE:
        raise PermanentProviderError("FCM is not configured: set FCM_ACCESS_TOKEN or FCM_SERVICE_ACCOUNT_FILE")
    from core.redis import get_redis

    cached = get_redis().get(_TOKEN_CACHE_KEY)
    if cached:
        return str(cached)
    token, expires_in = _mint_access_token(settings.FCM_SERVICE_ACCOUNT_FILE)
    get_redis().set(_TOKEN_CACHE_KEY, token, ex=max(60, expires_in - 300))
    return token


def _forget_access_token() -> None:
    from core.redis import get_redis

    get_redis().delete(_TOKEN_CACHE_KEY)


def _mint_access_token(path: str) -> tuple[str, int]:
    """OAuth2 JWT-bearer grant (RFC 7523) signed with the service account's RS256 key."""
    import base64

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    with open(path) as fh:
        account = json.load(fh)
    token_uri = settings.FCM_TOKEN_URL or account["token_uri"]
    now = int(time.time())
    claims = {
        "iss": account["client_email"],
        "scope": "https://www.googleapis.com/auth/firebase.messaging",
        "aud": token_uri,
        "iat": now,
        "exp": now + 3600,
    }

    def b64(raw: bytes) -> bytes:
        return base64.urlsafe_b64encode(raw).rstrip(b"=")

    header = {"alg": "RS256", "typ": "JWT", "kid": account.get("private_key_id", "")}
    signing_input = b64(json.dumps(header).encode()) + b"." + b64(json.dumps(claims).encode())
    key = serialization.load_pem_private_key(account["private_key"].encode(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise PermanentProviderError("FCM service account key is not an RSA key")
    signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    assertion = (signing_input + b"." + b64(signature)).decode()
    response = http_post(
        token_uri,
        timeout=settings.PUSH_TIMEOUT_SECONDS,
        data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion},
    )
    if response.status_code >= 400:
        raise PermanentProviderError(f"FCM token exchange failed: HTTP {response.status_code} {response.text[:300]}")
    payload = response.json()
    if "access_token" not in payload:
        raise TransientProviderError("FCM token exchange returned no access_token")
    return str(payload["access_token"]), int(payload.get("expires_in", 3600))
