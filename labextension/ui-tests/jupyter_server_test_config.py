"""The Jupyter server the UI tests drive (never use this configuration outside tests: no token, no XSRF).

``ND_UI_PORT`` is its port (8888 by default); the store is ``$NOTEBOOK_DEPLOY_HOME``, as for the
kernels it starts.
"""

import os

from jupyterlab.galata import configure_jupyter_server

configure_jupyter_server(c)  # noqa: F821 - `c` is the config object Jupyter passes in

c.ServerApp.ip = "127.0.0.1"  # noqa: F821
c.ServerApp.port = int(os.environ.get("ND_UI_PORT", "8888"))  # noqa: F821
c.ServerApp.allow_root = True  # noqa: F821 - CI runs as root
# nothing to fetch from the network while testing
c.LabApp.news_url = None  # noqa: F821
c.LabServerApp.check_for_updates_class = "jupyterlab.NeverCheckForUpdate"  # noqa: F821
