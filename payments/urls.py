from __future__ import annotations

from django.urls import URLPattern, path

from payments.apis import carts, escrow, pricing, subscriptions

urlpatterns: list[URLPattern] = [
    # Carts and the subscription gateway's webhook (payments/apis/carts.py, subscriptions.py; docs/subscriptions.md).
    path("cart/", carts.CartApi.as_view(), name="cart"),
    path("cart/items/", carts.CartItemsApi.as_view(), name="cart-items"),
    path("cart/items/<int:product_id>/", carts.CartItemApi.as_view(), name="cart-item"),
    path("webhooks/razorpay/", subscriptions.RazorpayWebhookApi.as_view(), name="webhook-razorpay"),
    # Escrow (payments/apis/escrow.py; docs/escrow.md).
    path("escrow/transactions/", escrow.EscrowTransactionListCreateApi.as_view(), name="escrow-transactions"),
    path("escrow/transactions/<int:pk>/", escrow.EscrowTransactionDetailApi.as_view(), name="escrow-transaction"),
    path("escrow/transactions/<int:pk>/fund/", escrow.EscrowFundApi.as_view(), name="escrow-fund"),
    path("escrow/transactions/<int:pk>/cancel/", escrow.EscrowCancelApi.as_view(), name="escrow-cancel"),
    path("escrow/transactions/<int:pk>/dispute/", escrow.EscrowDisputeApi.as_view(), name="escrow-dispute"),
    path("escrow/transactions/<int:pk>/release/", escrow.EscrowReleaseApi.as_view(), name="escrow-release"),
    path("escrow/milestones/<int:pk>/submit/", escrow.MilestoneSubmitApi.as_view(), name="escrow-milestone-submit"),
    path("escrow/milestones/<int:pk>/approve/", escrow.MilestoneApproveApi.as_view(), name="escrow-milestone-approve"),
    path("escrow/milestones/<int:pk>/reject/", escrow.MilestoneRejectApi.as_view(), name="escrow-milestone-reject"),
    path("escrow/verification/", escrow.SellerVerificationApi.as_view(), name="escrow-verification"),
    path("escrow/verifications/", escrow.SellerVerificationListApi.as_view(), name="escrow-verifications"),
    path(
        "escrow/verifications/<int:pk>/review/",
        escrow.SellerVerificationReviewApi.as_view(),
        name="escrow-verification-review",
    ),
    path("products/<int:pk>/price/", pricing.ProductPriceApi.as_view(), name="product-price"),
    path(
        "admin/products/<int:pk>/price-history/",
        pricing.ProductPriceHistoryApi.as_view(),
        name="product-price-history",
    ),
    # The seed's pricing shortcuts have no trailing slash; both spellings are served.
    # The seed's spelling is documented; the trailing-slash one is served too, kept out of
    # the schema (schema=None) so each endpoint is one operation there.
    path(
        "admin/discounts/trigger-recompute",
        pricing.DiscountRecomputeTriggerApi.as_view(),
        name="discount-trigger-recompute",
    ),
    path("admin/discounts/trigger-recompute/", pricing.DiscountRecomputeTriggerApi.as_view(schema=None)),
    path(
        "admin/discounts/task-status/<str:task_id>",
        pricing.DiscountTaskStatusApi.as_view(),
        name="discount-task-status",
    ),
    path("admin/discounts/task-status/<str:task_id>/", pricing.DiscountTaskStatusApi.as_view(schema=None)),
]
