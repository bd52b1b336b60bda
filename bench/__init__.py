"""``tavus-callbacks bench``: the pipeline measured here, against baselines run alongside it.

Everything runs locally with the production settings: a private redis-server, gunicorn with
``deploy/gunicorn.conf.py``, Celery workers as the Procfile starts them, a scratch SQLite file
or PostgreSQL database. ``wrk`` drives the load (``post.lua``). Baselines, in the same run: a
bare Flask endpoint doing one Redis LPUSH (``baseline.py``) for the intake, a no-op Celery task
(``noop.py``) for the workers. The heavy code lives here; ``cli/main.py`` only calls ``run``.
"""
