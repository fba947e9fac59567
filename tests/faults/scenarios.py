"""What each trial seeds, and how it counts what was lost, done twice, or broken.

A scenario seeds a few hundred rows for one job (after the harness emptied the domain
tables), and `check()` compares the outcome with what one fault-free run produces:

- `lost`: work the job owed and did not do once recovered (an expired order still pending, a
  period never charged, a message never taken by the provider);
- `duplicated`: work done twice (a period charged twice, a message the provider took twice);
- `violations`: any other broken invariant (stock not conserved, a row changed that was not
  due, two active discounts for one batch).

`pending()` says whether the job itself still has work left (so the harness triggers it
again, as beat's next slot would), as opposed to downstream messages still on their way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import Group
from django.db.models import Count, Sum
from django.utils import timezone


@dataclass
class Outcome:
    lost: int = 0
    duplicated: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def settled(self) -> bool:
        return self.lost == 0


class Scenario:
    key = ""  # the catalog job
    title = ""

    def seed(self) -> None:
        raise NotImplementedError

    def pending(self) -> bool:
        raise NotImplementedError

    def check(self) -> Outcome:
        raise NotImplementedError

    def calibrate(self) -> None:
        """Called once, after a fault-free run: remember what a correct run produces."""


def _notices(template: str) -> tuple[int, int]:
    """(distinct dedupe groups, rows beyond one per group and channel) of a template's notifications."""
    from notifications.models import Notification

    rows = Notification.objects.filter(template_key=template)
    groups = rows.values("dedupe_group").distinct().count()
    extra = sum(
        n - 1 for n in rows.values("dedupe_group", "channel").annotate(n=Count("id")).values_list("n", flat=True)
    )
    return groups, extra


class PaymentTimeouts(Scenario):
    key = "payment_timeouts"
    title = "payment timeouts (orders.cancel_expired)"
    EXPIRED, FRESH, PRODUCTS, STOCK = 300, 60, 20, 10_000

    def seed(self) -> None:
        from core.models import User
        from tests.support.factories.payments import make_product, seed_orders

        customer = User.objects.create_user(
            username="fault-shopper", email="shopper@example.com", phone_number="+14155552671"
        )
        products = [make_product(stock=self.STOCK) for _ in range(self.PRODUCTS)]
        self.products = [p.pk for p in products]  # its own: other scenarios may run alongside
        seed_orders(customer, products, count=self.EXPIRED, age_days=5)
        seed_orders(customer, products, count=self.FRESH, age_days=1)
        # Stock conserved: what is on the shelf plus what fresh orders hold is the starting stock.
        self.fresh_units = self.FRESH * 6

    def pending(self) -> bool:
        from payments.models import Order

        return Order.objects.filter(
            status="pending_payment", created_at__lt=timezone.now() - timedelta(days=3)
        ).exists()

    def check(self) -> Outcome:
        from payments.models import Order, Product

        out = Outcome()
        old = timezone.now() - timedelta(days=3)
        cancelled = Order.objects.filter(status="cancelled", created_at__lt=old).count()
        out.lost += self.EXPIRED - cancelled
        if Order.objects.filter(status="cancelled", created_at__gte=old).exists():
            out.violations.append("a fresh order was cancelled")
        stock = Product.objects.filter(pk__in=self.products).aggregate(s=Sum("stock"))["s"] or 0
        expected = self.PRODUCTS * self.STOCK - self.fresh_units
        if stock > expected:
            out.duplicated += stock - expected  # units restored twice
            out.violations.append(f"stock {stock} above {expected}: restored twice")
        # A shortfall is stock not yet restored: the lost orders above.
        notified, extra = _notices("payment_failed")
        out.lost += cancelled - min(notified, cancelled)
        out.duplicated += extra
        if notified > cancelled:
            out.violations.append(f"{notified} payment_failed notices for {cancelled} cancelled orders")
        return out


class DriverExpiry(Scenario):
    key = "driver_assignment_expiry"
    title = "driver offer expiry"
    EXPIRED, FRESH = 250, 50

    def seed(self) -> None:
        from core.models import User
        from logistics.models import EIC_GROUP
        from tests.support.factories.logistics import DriverFactory, StationFactory, StockRequestFactory

        eic = User.objects.create_user(username="fault-eic", email="eic@example.com", phone_number="+14155552671")
        eic.groups.add(Group.objects.get_or_create(name=EIC_GROUP)[0])
        from django.db import connection

        from logistics.models import AssignmentOffer, StockRequest

        driver = DriverFactory()
        station = StationFactory()
        with connection.cursor() as cur:
            cur.execute("SELECT now()")
            now = cur.fetchone()[0]
        requests = StockRequestFactory.build_batch(self.EXPIRED + self.FRESH, station=station)
        for n, request in enumerate(requests):
            request.status = StockRequest.Status.ASSIGNING
            request.target_driver = driver
            request.assignment_mode = StockRequest.AssignmentMode.MANUAL
            request.assignment_started_at = now - timedelta(seconds=400 if n < self.EXPIRED else 5)
        StockRequest.objects.bulk_create(requests)
        AssignmentOffer.objects.bulk_create(
            AssignmentOffer(
                stock_request=r,
                driver=driver,
                mode=StockRequest.AssignmentMode.MANUAL,
                offered_at=r.assignment_started_at,
                expires_at=r.assignment_started_at + timedelta(seconds=300),
            )
            for r in requests
        )

    def _left(self) -> int:
        from logistics.models import StockRequest

        return StockRequest.objects.filter(
            status=StockRequest.Status.ASSIGNING, assignment_started_at__lt=timezone.now() - timedelta(seconds=300)
        ).count()

    def pending(self) -> bool:
        return self._left() > 0

    def check(self) -> Outcome:
        from logistics.models import StockRequest

        out = Outcome(lost=self._left())
        fresh = StockRequest.objects.filter(assignment_started_at__gte=timezone.now() - timedelta(seconds=300))
        if StockRequest.objects.filter(status=StockRequest.Status.ASSIGNING).count() != self.FRESH + out.lost:
            out.violations.append("an offer still open was expired")
        if fresh.exclude(status=StockRequest.Status.ASSIGNING).exists():
            out.violations.append("a fresh offer was reset")
        notified, extra = _notices("driver_assignment_expired")
        reset = self.EXPIRED - out.lost
        out.lost += max(0, reset - notified)
        out.duplicated += extra
        if notified > reset:
            out.violations.append(f"{notified} expiry notices for {reset} expired offers")
        return out


class DiscountRecompute(Scenario):
    key = "discount_recompute"
    title = "discount recompute"
    BATCHES = 400
    expected: dict[str, tuple[Any, ...]] | None = None  # set by calibrate(), from a fault-free run

    def seed(self) -> None:
        from tests.support.factories.pricing import default_policy, seed_batches

        default_policy()
        seed_batches(count=self.BATCHES, products=40)

    def _active(self) -> dict[str, tuple[Any, ...]]:
        from payments.models import Discount

        rows = Discount.objects.filter(status=Discount.Status.ACTIVE).values_list(
            "batch__lot_code", "tier_days", "percentage", "discounted_price"
        )
        found: dict[str, tuple[Any, ...]] = {}
        self.twice = 0
        for lot, *rest in rows:
            if lot in found:
                self.twice += 1
            found[lot] = tuple(rest)
        return found

    def calibrate(self) -> None:
        self.expected = self._active()
        assert self.expected, "the fault-free recompute gave no batch a discount"

    def pending(self) -> bool:
        return self.expected is not None and len(self._active()) < len(self.expected)

    def check(self) -> Outcome:
        if self.expected is None:
            return Outcome()
        active = self._active()
        out = Outcome(lost=len(set(self.expected) - set(active)), duplicated=self.twice)
        if self.twice:
            out.violations.append(f"{self.twice} batches with two active discounts")
        wrong = [lot for lot, v in active.items() if self.expected.get(lot) != v]
        if wrong:
            out.violations.append(f"{len(wrong)} discounts differ from a fault-free run, e.g. {wrong[:3]}")
        return out


class DueSubscriptions(Scenario):
    key = "due_subscriptions"
    title = "due subscriptions (fan-out and charges)"
    COUNT, STOCK = 100, 1000

    def __init__(self, gateway: Any) -> None:
        self.gateway = gateway

    def seed(self) -> None:
        from tests.support.factories.payments import make_product
        from tests.support.factories.subscriptions import make_plan, seed_due_subscriptions

        with self.gateway.lock:
            for kept in (self.gateway.calls, self.gateway.orders_made, self.gateway.orders, self.gateway.payments):
                kept.clear()
        products = [make_product(stock=self.STOCK) for _ in range(10)]
        self.products = [p.pk for p in products]  # its own: other scenarios may run alongside
        seed_due_subscriptions([make_plan(product=p) for p in products], count=self.COUNT, prefix="fault")

    def pending(self) -> bool:
        from payments.models import Subscription
        from payments.models.subscriptions import utc_today

        return Subscription.objects.filter(next_charge_date__lte=utc_today(), status="active").exists()

    def check(self) -> Outcome:
        from payments.models import Order, Product, SubscriptionCharge

        out = Outcome()
        per_period = self.gateway.charges_per_period()
        charged = len(per_period)
        out.lost = self.COUNT - charged
        out.duplicated = sum(n - 1 for n in per_period.values() if n > 1)
        if out.duplicated:
            out.violations.append(f"{out.duplicated} periods charged twice by the gateway")
        delivered = SubscriptionCharge.objects.filter(status="succeeded", order__isnull=False).count()
        out.lost = max(out.lost, self.COUNT - delivered)
        paid = Order.objects.filter(status="paid", items__product_id__in=self.products).distinct().count()
        if paid > self.COUNT or delivered > self.COUNT:
            out.violations.append(f"{paid} orders paid, {delivered} charges delivered for {self.COUNT} periods")
        stock = Product.objects.filter(pk__in=self.products).aggregate(s=Sum("stock"))["s"] or 0
        if stock != 10 * self.STOCK - paid:
            out.violations.append(f"stock {stock} is not {10 * self.STOCK} less the {paid} orders delivered")
        return out


class EscrowReminders(Scenario):
    key = "escrow_funding_reminders"
    title = "escrow funding reminders"
    OLD, FRESH = 250, 50

    def seed(self) -> None:
        from tests.support.factories.escrow import seed_unfunded

        seed_unfunded(count=self.OLD, age_days=10)
        seed_unfunded(count=self.FRESH, age_days=1)

    def _reminded(self) -> tuple[int, int]:
        return _notices("escrow_funding_reminder")

    def pending(self) -> bool:
        return self._reminded()[0] < self.OLD

    def check(self) -> Outcome:
        reminded, extra = self._reminded()
        out = Outcome(lost=max(0, self.OLD - reminded), duplicated=extra)
        if reminded > self.OLD:
            out.violations.append(f"{reminded} transactions reminded, {self.OLD} were due")
        return out


class CartsCleanup(Scenario):
    key = "expired_carts_cleanup"
    title = "cleanups (expired carts)"
    OLD, FRESH = 300, 50

    def seed(self) -> None:
        from core.models import User
        from payments.models import Cart, CartItem
        from tests.support.factories.payments import make_product

        product = make_product(stock=10)
        users = User.objects.bulk_create(
            [User(username=f"cart-{i}", email=f"cart-{i}@example.com") for i in range(self.OLD + self.FRESH)]
        )
        old = timezone.now() - timedelta(days=40)
        carts = Cart.objects.bulk_create(
            [Cart(user=u, updated_at=old if i < self.OLD else timezone.now()) for i, u in enumerate(users)]
        )
        CartItem.objects.bulk_create([CartItem(cart=c, product=product, quantity=1) for c in carts])

    def pending(self) -> bool:
        from payments.models import Cart

        return Cart.objects.filter(updated_at__lt=timezone.now() - timedelta(days=30)).exists()

    def check(self) -> Outcome:
        from payments.models import Cart, CartItem

        cutoff = timezone.now() - timedelta(days=30)
        out = Outcome(lost=Cart.objects.filter(updated_at__lt=cutoff).count())
        fresh = Cart.objects.filter(updated_at__gte=cutoff).count()
        if fresh != self.FRESH:
            out.violations.append(f"{self.FRESH - fresh} fresh carts deleted")
        if CartItem.objects.count() != Cart.objects.count():
            out.violations.append("cart items left without their cart, or a cart without its item")
        return out


class Delivery(Scenario):
    """Notification delivery: SMS (Twilio), email (SendGrid), push (FCM) and SMS (MSG91), faked at HTTP."""

    key = ""  # not a job: written through the outbox, delivered by notifications.deliver_batch
    title = "notification delivery"
    PER_CHANNEL = 60

    def __init__(self, providers: Any) -> None:
        self.providers = providers

    def seed(self) -> None:
        from django.db import transaction

        from core.models import User
        from notifications.models import PushDevice
        from notifications.services import NotifyRequest, notify_many

        self.providers.reset()
        user = User.objects.create_user(username="fault-reader", email="reader@example.com")
        device = PushDevice.objects.create(user=user, token="fcm-token-1", platform="android")
        requests = []
        for n in range(self.PER_CHANNEL):
            requests.append(
                NotifyRequest(
                    template="raw_sms",
                    to="+14155552671",
                    context={"body": f"sms {n}"},
                    channels=["sms"],
                    dedupe_key=f"sms:{n}",
                )
            )
            requests.append(
                NotifyRequest(
                    template="raw_email",
                    to=f"reader{n % 10}@example.com",
                    context={"subject": f"mail {n}", "body": f"mail {n}"},
                    channels=["email"],
                    dedupe_key=f"mail:{n}",
                )
            )
            requests.append(
                NotifyRequest(
                    template="raw_push",
                    user=user,
                    context={"title": f"push {n}", "body": f"push {n}"},
                    channels=["push"],
                    dedupe_key=f"push:{n}",
                )
            )
        del device
        with transaction.atomic():
            notify_many(requests)
        self.expected = {f"{kind} {n}" for kind in ("sms", "mail", "push") for n in range(self.PER_CHANNEL)}

    def pending(self) -> bool:
        from notifications.models import Notification

        return Notification.objects.exclude(status__in=["sent", "failed"]).exists()

    def check(self) -> Outcome:
        from notifications.models import Notification

        taken = self.providers.accepted()
        out = Outcome(lost=len(self.expected - set(taken)))
        out.duplicated = sum(n - 1 for n in taken.values() if n > 1)
        failed = Notification.objects.filter(status="failed").count()
        if failed:
            out.violations.append(f"{failed} notifications failed against a provider that never refuses")
        if set(taken) - self.expected:
            out.violations.append("the providers took messages nobody wrote")
        return out
