from __future__ import annotations

from django.db import models

from payments.models.catalog import currency_validator


class ExchangeRate(models.Model):
    """1 `base` = `rate` `quote` on `as_of` (the ECB publishes EUR-based reference rates)."""

    base = models.CharField(max_length=3, validators=[currency_validator])
    quote = models.CharField(max_length=3, validators=[currency_validator])
    rate = models.DecimalField(max_digits=20, decimal_places=10)
    as_of = models.DateField()
    source = models.CharField(max_length=50, default="ecb")
    fetched_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-as_of", "base", "quote"]
        constraints = [
            # Also the index of "newest rate on or before a date" (scanned backwards on as_of).
            models.UniqueConstraint(fields=["base", "quote", "as_of"], name="exchange_rate_one_per_day"),
            models.CheckConstraint(condition=models.Q(rate__gt=0), name="exchange_rate_positive"),
        ]

    def __str__(self) -> str:
        return f"1 {self.base} = {self.rate} {self.quote} on {self.as_of}"
