"""The IPython extension: ``%load_ext notebook_deploy`` starts the session recorder (``recorder.py``)
and adds ``%deploy``, which captures a variable (``variable.py``) or shows the panel (``panel.py``)."""

from __future__ import annotations

import sys
from typing import Any

from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from ..capturing import warm
from ..errors import NotebookDeployError
from .recorder import recorder_for
from .variable import deploy_from_kernel, summary


@magics_class
class DeployMagics(Magics):
    """``%deploy``: capture a model with its recipe, and optionally serve it."""

    @magic_arguments()
    @argument("model", nargs="?", help="the variable that holds the model")
    @argument("--name", help="the bundle's name (default: the variable's name)")
    @argument("--sample", help="an expression giving a few input rows (default: the rows the model was fitted on)")
    @argument("--serve", action="store_true", help="serve the bundle on localhost once captured")
    @argument("--port", type=int, default=0, help="the port to serve on (default: a free one)")
    @argument("--include-data", action="store_true", help="(the default now: kept so older notebooks still run)")
    @argument("--no-data", action="store_true", help="store no copies of the data files, only their paths and sha256")
    @argument(
        "--reference-data",
        action="store_true",
        help="record data files above the 10 MiB cap by path and sha256 instead of refusing",
    )
    @argument(
        "--keep-fetched",
        action="store_true",
        help="keep the bytes of the URLs the recipe fetches in the bundle, for its replay",
    )
    @argument("--allow-secrets", action="store_true", help="capture even if the recipe seems to hold credentials")
    @argument("--panel", action="store_true", help="show the deploy panel (MODEL, if given, is preselected)")
    @line_magic
    def deploy(self, line: str) -> Any:
        """Capture MODEL from this kernel, with the cells that built it, into a new bundle version.

        Examples::

            %deploy clf
            %deploy clf --name churn --sample X_test[:5] --serve
            %deploy --panel
        """
        args = parse_argstring(self.deploy, line)
        if args.panel:
            from .panel import DeployPanel

            shell = self.shell
            assert shell is not None  # a registered magic runs in its shell
            return DeployPanel(shell.user_ns, shell=shell, model=args.model)
        if args.model is None:
            print(
                "%deploy: name the model's variable (%deploy clf), or show the panel with %deploy --panel",
                file=sys.stderr,
            )
            return None
        sample = args.sample
        if sample and len(sample) > 1 and sample[0] == sample[-1] and sample[0] in "'\"":
            sample = sample[1:-1]  # IPython's splitter keeps the quotes of --sample "X[:5, [0, 2]]"
        try:
            bundle, notes = deploy_from_kernel(
                self.shell,
                args.model,
                name=args.name,
                sample=sample,
                include_data=not args.no_data,
                reference_data=args.reference_data,
                keep_fetched=args.keep_fetched,
                allow_secrets=args.allow_secrets,
            )
        except NotebookDeployError as error:
            print(f"%deploy: {error}", file=sys.stderr)
            return None
        print(summary(bundle, notes))
        if args.serve:
            from ..serving.process import serve

            return serve(bundle, port=args.port)
        return None


def load_ipython_extension(shell: Any) -> None:
    """Called by ``%load_ext notebook_deploy``. The warm probe server starts here, in the background,
    so that even the first capture's probe skips starting an interpreter."""
    recorder_for(shell)
    shell.register_magics(DeployMagics)
    warm.start()
