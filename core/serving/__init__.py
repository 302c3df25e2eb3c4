"""The gunicorn/uvicorn worker: HTTP protocol limits, connection balancing, graceful drain.

Imported only by gunicorn.conf.py and the embedded server (main_enterprise)."""
