import factory
from django.utils import timezone

from syncapp.models import Application, DirectoryUser, Tenant, Token


class TenantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tenant
        django_get_or_create = ["slug"]

    slug = factory.Sequence(lambda n: f"tenant-{n}")
    name = factory.LazyAttribute(lambda t: t.slug.title())
    provider = Tenant.Provider.DEMO
    provider_config = factory.LazyFunction(lambda: {"users": 50, "apps": 10, "seed": 3})


class DirectoryUserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = DirectoryUser

    tenant = factory.SubFactory(TenantFactory)
    external_id = factory.Sequence(lambda n: f"1{n:08d}")
    primary_email = factory.Sequence(lambda n: f"person{n}@example.org")
    first_seen = factory.LazyFunction(timezone.now)
    last_seen = factory.LazyFunction(timezone.now)


class ApplicationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Application

    tenant = factory.SubFactory(TenantFactory)
    client_id = factory.Sequence(lambda n: f"{n}.apps.googleusercontent.com")
    display_name = factory.Sequence(lambda n: f"App {n}")
    first_seen = factory.LazyFunction(timezone.now)
    last_seen = factory.LazyFunction(timezone.now)


class TokenFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Token

    tenant = factory.SubFactory(TenantFactory)
    user = factory.SubFactory(DirectoryUserFactory, tenant=factory.SelfAttribute("..tenant"))
    application = factory.SubFactory(ApplicationFactory, tenant=factory.SelfAttribute("..tenant"))
    scopes = factory.LazyFunction(lambda: ["openid"])
    first_seen = factory.LazyFunction(timezone.now)
    last_seen = factory.LazyFunction(timezone.now)
