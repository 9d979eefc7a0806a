import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from system_app.models import Secret
from tasks_app.models import Task, TaskRun
from tasks_app.notifications.models import Channel, Notification
from workers_app.models import Worker

PASSWORD = "correct horse battery staple"

# A schedule whose next slot is months away, for a task made due by hand: with
# "* * * * *" a test that crosses a minute boundary meets a second, real slot.
YEARLY = "0 0 1 1 *"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.com")
    password = factory.django.Password(PASSWORD)


class TaskFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Task

    name = factory.Sequence(lambda n: f"task-{n}")
    executor = "shell"
    command = "echo hello"
    schedule = None


class TaskRunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TaskRun

    task = factory.SubFactory(TaskFactory)
    task_name = factory.LazyAttribute(lambda run: run.task.name)
    scheduled_at = factory.LazyFunction(timezone.now)


class WorkerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Worker

    id = factory.Sequence(lambda n: f"host-{n}")
    hostname = "host"
    queues = factory.LazyFunction(lambda: ["default"])
    task_types = factory.LazyFunction(lambda: ["shell", "http", "python"])
    last_heartbeat = factory.LazyFunction(timezone.now)


class ChannelFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Channel

    name = factory.Sequence(lambda n: f"channel-{n}")
    kind = "webhook"
    config = factory.LazyFunction(lambda: {"url": "http://127.0.0.1:9/hook", "secret": "s3cret"})


class NotificationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Notification

    channel = factory.SubFactory(ChannelFactory)
    event = "failure"
    payload = factory.LazyFunction(lambda: {"event": "failure", "message": "it failed"})


class SecretFactory(factory.django.DjangoModelFactory):
    """A stored secret; ``value`` goes through Secret.set_value (encrypted)."""

    class Meta:
        model = Secret

    name = factory.Sequence(lambda n: f"SECRET_{n}")
    value = factory.Sequence(lambda n: f"s3cr3t-value-{n:04d}-Zq9")

    @classmethod
    def _create(cls, model_class, *args, value, **kwargs):
        secret = model_class(*args, **kwargs)
        secret.set_value(value)
        secret.save()
        return secret
