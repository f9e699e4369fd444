"""Container images as data: references, credentials, a registry client, layers and image builds."""
