from rest_framework.routers import SimpleRouter

from workers_app.api.views import WorkerViewSet

router = SimpleRouter(trailing_slash=False)
router.register("workers", WorkerViewSet, basename="worker")

urlpatterns = router.urls
