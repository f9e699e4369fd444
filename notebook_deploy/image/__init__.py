"""Container images as data: references, credentials, a registry client, layers and image builds."""

# How an image can be pushed: "daemonless" with the registry's HTTP API, "docker" from a Docker daemon,
# "auto" the daemon when one answers. labextension/src/dialogs.ts repeats it (tests/test_facts.py checks).
BACKENDS = ("auto", "daemonless", "docker")
