"""Create the first administrator, once, with no default password.

The password comes from ADMIN_PASSWORD when set; otherwise a random one is
generated and printed once. Running it again when an administrator exists
changes nothing (use --reset-password to print a new random password).
"""

import os
import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Create the first admin user (password from ADMIN_PASSWORD, or random and printed once)."

    def add_arguments(self, parser):
        parser.add_argument("--username", default=os.environ.get("ADMIN_USERNAME", "admin"))
        parser.add_argument("--email", default=os.environ.get("ADMIN_EMAIL", ""))
        parser.add_argument("--reset-password", action="store_true", help="set a new password for --username")

    def handle(self, *args, username, email, reset_password, **options):
        User = get_user_model()
        if not username or len(username) > 150:
            raise CommandError("--username must be 1-150 characters")
        password = os.environ.get("ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        if reset_password:
            user = User.objects.filter(username=username).first()
            if user is None:
                raise CommandError(f"no user named {username!r}")
            user.set_password(password)
            user.save(update_fields=["password"])
            self._announce(username, password, "Password reset")
            return
        if User.objects.filter(is_superuser=True).exists():
            self.stdout.write("An administrator already exists; nothing to do.")
            return
        if User.objects.filter(username=username).exists():
            raise CommandError(f"a non-admin user named {username!r} exists; pass another --username")
        user = User.objects.create_superuser(username=username, email=email, password=password)
        admin_group = Group.objects.filter(name="admin").first()
        if admin_group:
            user.groups.add(admin_group)
        self._announce(username, password, "Created administrator")

    def _announce(self, username, password, what):
        shown = "(from ADMIN_PASSWORD)" if os.environ.get("ADMIN_PASSWORD") else password
        self.stdout.write(self.style.SUCCESS(f"{what}: username {username!r}, password {shown}"))
        if not os.environ.get("ADMIN_PASSWORD"):
            self.stdout.write("This password is shown only once; keep it somewhere safe.")
