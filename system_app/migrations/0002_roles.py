"""Create the admin, operator and viewer roles with the scheduler's permissions."""

from django.db import migrations

PERMISSIONS = (
    "task.read",
    "task.write",
    "task.execute",
    "task.delete",
    "worker.read",
    "worker.write",
    "system.read",
    "system.write",
)
ROLES = {
    "admin": PERMISSIONS,
    "operator": ("task.read", "task.write", "task.execute", "worker.read", "system.read"),
    "viewer": ("task.read", "worker.read", "system.read"),
}


def create_roles(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    content_type, _ = ContentType.objects.get_or_create(app_label="system_app", model="apikey")
    permissions = {}
    for name in PERMISSIONS:
        permissions[name], _ = Permission.objects.get_or_create(
            content_type=content_type, codename=name.replace(".", "_"), defaults={"name": name}
        )
    for role, granted in ROLES.items():
        group, _ = Group.objects.get_or_create(name=role)
        group.permissions.add(*(permissions[name] for name in granted))


def delete_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("system_app", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_roles, delete_roles)]
