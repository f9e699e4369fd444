"""The quick start: run example_notebooks/quickstart.ipynb headless (it trains a model and captures it),
then serve the captured bundle on localhost and show a prediction made over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import nbclient
import nbformat
import requests

import notebook_deploy as nd

NOTEBOOK = Path(__file__).resolve().parents[1] / "example_notebooks" / "quickstart.ipynb"


def main() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    print(f"Running {NOTEBOOK.name} in a fresh kernel ...", flush=True)
    nbclient.NotebookClient(
        notebook, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    ).execute()
    bundle = nd.load("iris")
    print(f"Captured {bundle.ref} into {nd.Store().root}")
    print(bundle)
    with nd.serve(bundle) as server:
        request = {"instances": bundle.sample["instances"][:2]}
        print(f"\nServing at {server.url} (API docs: {server.docs_url})")
        print(f"POST {server.url}/predict {json.dumps(request)}")
        answer = requests.post(f"{server.url}/predict", json=request, timeout=30)
        print(f"-> {answer.status_code} {answer.text}")
    print("\nServe it again with: notebook-deploy serve iris")


if __name__ == "__main__":
    main()
