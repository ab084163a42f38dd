from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from monitoring.observability.dashboard import dashboard_view
from monitoring.views import healthz, metrics_view, readyz

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/dashboard/", admin.site.admin_view(dashboard_view), name="ballast-dashboard"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("syncapp.api")),
    path("metrics", metrics_view, name="prometheus-django-metrics"),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
]
