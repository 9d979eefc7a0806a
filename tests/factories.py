import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from tasks_app.models import Task, TaskRun
from workers_app.models import Worker

PASSWORD = "correct horse battery staple"


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
