"""Request body limits for every URL, answered with the API's JSON error body.

Django bounds what it buffers itself (`request.body`, form fields: DATA_UPLOAD_MAX_MEMORY_SIZE)
but DRF's JSON parser reads the request stream directly, past that limit. So the declared
length is checked here, before any view or parser runs:

- a multipart/form-data body (milestone evidence files) may be up to REQUEST_UPLOAD_MAX_BYTES;
- any other body up to REQUEST_BODY_MAX_BYTES (which is also DATA_UPLOAD_MAX_MEMORY_SIZE);

and a larger one gets 413 without being read. Django's own refusals raised later (a body
without a length read past the limit, too many fields or files) become the same JSON.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpRequest, HttpResponse, JsonResponse


def _error(status: int, detail: str) -> JsonResponse:
    return JsonResponse({"detail": detail, "errors": {}}, status=status)


def body_limit_for(request: HttpRequest) -> int:
    if request.content_type == "multipart/form-data":
        limit: int = settings.REQUEST_UPLOAD_MAX_BYTES
    else:
        limit = settings.REQUEST_BODY_MAX_BYTES
    return limit


class RequestBodyLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        raw = request.META.get("CONTENT_LENGTH") or "0"
        try:
            length = int(raw)
        except ValueError:
            return _error(400, f"Content-Length must be a number of bytes, not {raw!r}.")
        limit = body_limit_for(request)
        if length > limit:
            return _error(413, f"The request body ({length} bytes) is over the limit of {limit} bytes.")
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, RequestDataTooBig):
            return _error(413, f"The request body is over the limit of {body_limit_for(request)} bytes.")
        if isinstance(exception, TooManyFieldsSent | TooManyFilesSent):
            return _error(400, str(exception))
        return None
