from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from logistics import selectors


class IsEIC(BasePermission):
    """Members of the `eic` group: the engineers in charge who dispatch trips."""

    message = "Only EIC users (members of the 'eic' group) may change a stock request's status."

    def has_permission(self, request: Request, view: Any) -> bool:
        return selectors.user_is_eic(user=request.user)


class IsDriver(BasePermission):
    message = "Only drivers may see and answer trip offers."

    def has_permission(self, request: Request, view: Any) -> bool:
        driver = selectors.driver_for_user(user=request.user)
        if driver is None:
            return False
        request.driver = driver  # type: ignore[attr-defined]
        return True
