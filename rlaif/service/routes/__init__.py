"""One router per resource of the API; `rlaif.service.app.create_app` includes them all."""

from rlaif.service.routes import audits, batches, files, health, judging, labeling, metrics, rewards

ROUTERS = [health.router, judging.router, rewards.router, files.router, batches.router, audits.router, labeling.router,
           metrics.router]

__all__ = ["ROUTERS"]
