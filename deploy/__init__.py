"""Deployment files; ``deploy.wsgi`` is the web process's WSGI entry point."""
