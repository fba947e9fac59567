"""The payments REST API, one module per subdomain (mounted by payments/urls.py under /api/v1/)."""
