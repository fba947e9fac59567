from __future__ import annotations

import logging
import uuid

from notifications.providers.base import OutboundMessage

logger = logging.getLogger("notifications.console")


class ConsoleProvider:
    """Development: log the message instead of sending it."""

    name = "console"

    def send(self, message: OutboundMessage) -> str:
        logger.info(
            "[%s] to=%s subject=%r body=%r data=%s",
            message.channel,
            message.to,
            message.subject,
            message.body,
            message.data,
        )
        return f"console-{uuid.uuid4()}"
