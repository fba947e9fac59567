"""Mounted at /api/ with the namespace "logistics" (config/urls.py); paths are the mobile apps' own."""

from __future__ import annotations

from django.urls import URLPattern, path

from logistics import apis

urlpatterns: list[URLPattern] = [
    path("driver/pending-offers", apis.DriverPendingOffersApi.as_view(), name="driver-pending-offers"),
    path("driver-trips/accept/", apis.DriverTripAcceptApi.as_view(), name="driver-trip-accept"),
    path("driver-trips/reject/", apis.DriverTripRejectApi.as_view(), name="driver-trip-reject"),
    path(
        "eic/stock-requests/<int:pk>/status/",
        apis.EicStockRequestStatusApi.as_view(),
        name="eic-stock-request-status",
    ),
]
