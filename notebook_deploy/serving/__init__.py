"""Serving: the ASGI app generated from a bundle, the uvicorn runner, and the local server handle."""
