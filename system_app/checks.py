from django.conf import settings
from django.core.checks import Error, register

DEV_SECRET_KEY_PREFIX = "dev-insecure-"


@register("security", deploy=False)
def check_secret_key(app_configs, **kwargs):
    """Refuse to run with DEBUG off on the development secret key."""
    if not settings.DEBUG and settings.SECRET_KEY.startswith(DEV_SECRET_KEY_PREFIX):
        return [Error("SECRET_KEY is the development key while DEBUG is off; set a real one.", id="scheduler.E001")]
    return []
