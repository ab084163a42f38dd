from django.http import JsonResponse
from django.views.decorators.cache import never_cache

from .health import readiness


@never_cache
def healthz(request):
    """Alive: the process answers. Nothing else is checked."""
    return JsonResponse({"status": "ok"})


@never_cache
def readyz(request):
    ready, body = readiness()
    return JsonResponse(body, status=200 if ready else 503)
