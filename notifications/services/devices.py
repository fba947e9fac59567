from __future__ import annotations

from typing import TYPE_CHECKING

from notifications.models import PushDevice

if TYPE_CHECKING:
    from core.models import User


def push_device_register(*, user: User, token: str, platform: str = PushDevice.Platform.ANDROID) -> PushDevice:
    """Register (or move, or reactivate) an FCM token: a token belongs to one user at a time."""
    device, _ = PushDevice.objects.update_or_create(
        token=token, defaults={"user": user, "platform": platform, "active": True, "deactivated_reason": ""}
    )
    return device
