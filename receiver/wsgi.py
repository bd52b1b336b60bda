"""The WSGI entry point gunicorn serves: ``receiver.wsgi:app``."""

from receiver import create_app

app = create_app()
