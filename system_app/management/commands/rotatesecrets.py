"""Re-encrypt every secret under the newest key of SECRETS_KEY.

Key rotation (docs/security.md): put the new key in front of the old one
(``SECRETS_KEY=new,old``) on every process, run this once, then drop the old
key. A secret that no configured key opens is named and left as it is.
"""

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from system_app import encryption
from system_app.models import Secret


class Command(BaseCommand):
    help = "Re-encrypt every secret's value under the first key of SECRETS_KEY."

    def handle(self, *args, **options):
        rotated, unreadable = 0, []
        for secret in Secret.objects.order_by("name"):
            try:
                with transaction.atomic():
                    secret.reencrypt()
            except encryption.InvalidToken:
                unreadable.append(secret.name)
                continue
            rotated += 1
        self.stdout.write(f"{rotated} secret(s) re-encrypted under the first key of SECRETS_KEY")
        if unreadable:
            raise CommandError(f"no configured key opens: {', '.join(unreadable)} (left as they were)")
