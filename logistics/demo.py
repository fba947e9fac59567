"""Demo data for `make run`: two stations, two drivers, an EIC user and a few open requests."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from logistics.models import EIC_GROUP, Driver, Station, StockRequest


def load_demo_data() -> dict[str, int]:
    """Idempotent: rows are matched on natural keys (station code, username, a request's station)."""
    User = get_user_model()
    stations = {}
    for code, name, kind in (
        ("MS-01", "Mother Station One", Station.Kind.MS),
        ("DBS-01", "Booster Station North", Station.Kind.DBS),
        ("DBS-02", "Booster Station South", Station.Kind.DBS),
    ):
        stations[code], _ = Station.objects.get_or_create(code=code, defaults={"name": name, "kind": kind})
    booster = stations["DBS-01"]

    eic, created = User.objects.get_or_create(username="eic_demo", defaults={"email": "eic@example.com"})
    if created:
        eic.set_unusable_password()
        eic.save(update_fields=["password"])
    eic.groups.add(Group.objects.get_or_create(name=EIC_GROUP)[0])

    drivers = 0
    for username, name, phone in (
        ("driver_demo1", "Asha Driver", "+919800000001"),
        ("driver_demo2", "Ravi Driver", "+919800000002"),
    ):
        user, created = User.objects.get_or_create(username=username, defaults={"phone_number": phone})
        if created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
        Driver.objects.get_or_create(user=user, defaults={"name": name, "phone": phone})
        drivers += 1

    requests = 0
    for station, quantity in ((booster, 1200), (booster, 800)):
        if not StockRequest.objects.filter(station=station, quantity=quantity).exists():
            StockRequest.objects.create(station=station, quantity=quantity)
        requests += 1
    return {"stations": len(stations), "drivers": drivers, "eic_users": 1, "stock_requests": requests}
