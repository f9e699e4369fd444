"""The wire protocols a served bundle speaks. Each module adds its routes to a ``ServedModel``; app.py
lists them (``PROTOCOLS``)."""
