from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from monitoring.metrics import metrics_view

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/v1/", include("syncapp.api")),
    path("metrics", metrics_view, name="prometheus-django-metrics"),
]
