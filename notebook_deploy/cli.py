"""The ``notebook-deploy`` command: a thin layer over the Store, load and serving calls."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from . import display
from .audit import default_path as default_audit_log
from .compare import POLICY_LIMITS
from .errors import NotebookDeployError
from .image import BACKENDS
from .keys import default_path as default_keys_file
from .replay import ATOL, RTOL
from .serving.settings import OPTIONS, flag
from .serving.split import CANARY, SHADOW, STICKY_HEADER
from .store import LATEST, Store
from .version import __version__

POLICY_HELP = "\n".join(f"  {key}: {meaning}" for key, meaning in POLICY_LIMITS.items())
REF_HELP = "REF is NAME (its latest version), NAME:TAG, NAME:VERSION (or 4+ leading digits), or a bundle folder."


def _errors_as_messages(command: Callable[..., Any]) -> Callable[..., Any]:
    """Print notebook-deploy's own errors as one clear line with exit code 1, not a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except NotebookDeployError as error:
            raise click.ClickException(str(error)) from None

    return wrapper


def _server_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options of ``serve``, one for each declared in ``serving.settings`` (type, range, help and
    default from there), each also read from its ``$NOTEBOOK_DEPLOY_<NAME>``, shown in --help: how a
    server in a container is configured (see ``notebook_deploy.kubernetes``)."""
    for option in reversed(OPTIONS.values()):
        if not option.command_line:
            continue
        click_type: Any
        if option.path:
            click_type = click.Path(exists=option.must_exist, dir_okay=option.name == "trust_dir", resolve_path=True)
        elif option.choices:
            click_type = click.Choice(option.choices)
        elif option.kind in (int, float) and (option.minimum is not None or option.maximum is not None):
            if option.kind is int:  # an int option's bounds are whole numbers
                click_type = click.IntRange(min=_whole(option.minimum), max=_whole(option.maximum))
            else:
                click_type = click.FloatRange(min=option.minimum, max=option.maximum)
        else:
            click_type = option.kind
        command = click.option(
            option.flag,
            option.name,
            type=None if option.kind is bool else click_type,
            default=None,
            envvar=option.variable if option.from_environment else None,
            show_envvar=option.from_environment,
            help=option.described(),
        )(command)
    return command


def _version_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``serve``'s --canary, --shadow and --sticky-header, declared once for every command that serves several
    versions of a model (``serve``, ``k8s``, ``ray``); ``serving.deployment.Deployment.parse`` reads them."""
    command = click.option(
        flag(STICKY_HEADER),
        metavar="NAME",
        help="Requests with the same value of this header always reach the same version (with --canary).",
    )(command)
    command = click.option(
        flag(SHADOW),
        multiple=True,
        metavar="REF",
        help="Send REF a copy of every inference request of its model; its answers are recorded, never returned "
        "(repeatable).",
    )(command)
    return click.option(
        flag(CANARY),
        multiple=True,
        metavar="REF=PERCENT",
        help="Send PERCENT of the inference requests of REF's model to REF, a version of a model served (repeatable).",
    )(command)


def _whole(bound: float | None) -> int | None:
    return None if bound is None else int(bound)


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="""\b
Capture a model from Python first:
  import notebook_deploy as nd
  nd.capture(model, sample=X_test[:5])      # then:
  notebook-deploy list
  notebook-deploy serve model --port 8000
Run 'notebook-deploy COMMAND --help' for examples of each command.""",
)
@click.option(
    "--store",
    "store_path",
    envvar="NOTEBOOK_DEPLOY_HOME",
    type=click.Path(file_okay=False, path_type=Path),
    help="The bundle store to use [default: ~/.notebook_deploy, or $NOTEBOOK_DEPLOY_HOME].",
)
@click.version_option(__version__, prog_name="notebook-deploy")
@click.pass_context
def cli(ctx: click.Context, store_path: Path | None) -> None:
    """Take models from notebooks to versioned bundles and REST endpoints."""
    ctx.obj = Store(store_path)


@cli.command(
    "list",
    epilog="""\b
Examples:
  notebook-deploy list              every bundle, every version
  notebook-deploy list iris         the versions of iris, oldest first""",
)
@click.argument("name", required=False)
@click.pass_obj
@_errors_as_messages
def list_command(store: Store, name: str | None) -> None:
    """List bundles: name, version, tags, created, model and size; versions or tags that cannot be read
    are listed as DAMAGED, with the reason."""
    bundles, damaged = store.inventory(name)
    if not bundles and not damaged:
        click.echo(f"No bundles in {store.root}. Capture one in Python: notebook_deploy.capture(model, sample=X[:5])")
        return
    rows = [("NAME", "VERSION", "TAGS", "CREATED", "MODEL", "SIZE")]
    tags = {each: _readable_tags(store, each) for each in {b.name for b in bundles}}
    for b in bundles:
        created = b.created[:19].replace("T", " ")
        model_type = b.model_type.rsplit(".", 1)[-1]
        on_it = ",".join(sorted(t for t, v in tags[b.name].items() if v == b.version))
        rows.append((b.name, b.version, on_it, created, model_type, display.human_size(b.size)))
    rows += [(d["name"], d["version"], "", "", "DAMAGED", "") for d in damaged]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    for d in damaged:
        click.echo(f"DAMAGED {d['name']}:{d['version']}: {d['reason']}", err=True)


def _readable_tags(store: Store, name: str) -> dict[str, str]:
    """The tags of ``name``, or none when its tags.json is damaged (listed as such)."""
    try:
        return store.tags(name)
    except NotebookDeployError:
        return {}


@cli.command(
    epilog=f"""\b
Examples:
  notebook-deploy show iris                 summary of the latest version
  notebook-deploy show iris:prod --json     the whole manifest, as JSON
  notebook-deploy show iris --lock          the pinned requirements
{REF_HELP}"""
)
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest (bundle.json).")
@click.option("--lock", is_flag=True, help="Print the pinned requirements (requirements.txt).")
@click.pass_obj
@_errors_as_messages
def show(store: Store, ref: str, as_json: bool, lock: bool) -> None:
    """Show one bundle, after checking every file against its manifest."""
    from .api import load

    bundle = load(ref, store)
    if as_json:
        click.echo(json.dumps(bundle.manifest, indent=2))
    elif lock:
        click.echo("\n".join(bundle.lock()))
    else:
        click.echo(str(bundle))
        tags = store.tags_of(bundle) if bundle.path.parent.parent == store.root / "bundles" else []
        if tags:
            click.echo(f"  tags      {', '.join(tags)}")
        click.echo(f"  path      {bundle.path}")
        click.echo(f"  signed    {_signed_by(bundle)}")


def _signed_by(bundle: Any) -> str:
    """Who signed ``bundle``, as 'show' prints it: key ids, each trusted here or not."""
    from .errors import UntrustedBundleError
    from .provenance import signers

    try:
        trusted, others = signers(bundle)
    except UntrustedBundleError as error:
        return str(error)
    return ", ".join([f"{key} (trusted)" for key in trusted] + [f"{key} (not trusted)" for key in others]) or "unsigned"


@cli.command(
    epilog=f"""\b
Examples:
  notebook-deploy serve iris                       on http://127.0.0.1:8000
  notebook-deploy serve iris:prod --port 0         on a free port
  notebook-deploy serve iris --host 0.0.0.0        reachable from other machines
  notebook-deploy serve iris --workers 2 --grpc-port 8001
                                                   two processes; the Open Inference Protocol over gRPC too
  notebook-deploy serve iris --tls-cert cert.pem --tls-key key.pem    over HTTPS
  notebook-deploy serve churn:prod --canary churn:3f2a=10 --sticky-header X-User
                                                   10% of churn's requests to 3f2a, one user on one version
  notebook-deploy serve churn:prod --shadow churn:9b1c    9b1c gets a copy of each request, answers nothing
  notebook-deploy serve iris churn                 two models: /v2/models/iris/infer, /v2/models/churn/infer
Each answer names the version that gave it in its X-Model-Version header.
Then:
  curl -X POST http://127.0.0.1:8000/predict -H 'content-type: application/json' \\
       -d '{{"instances": [[5.1, 3.5, 1.4, 0.2]]}}'
  open http://127.0.0.1:8000/docs for the API, with the bundle's sample as example;
  curl http://127.0.0.1:8000/metrics and /monitor/drift for Prometheus metrics and drift.
Once the key file has a key ('notebook-deploy keys create --role predict'), every route but health
and docs needs it: curl -H 'Authorization: Bearer KEY' ...
In a container, options also come from the environment ([env var: ...] above), e.g.
  NOTEBOOK_DEPLOY_WORKERS=2 NOTEBOOK_DEPLOY_AUTH=true notebook-deploy serve iris
'notebook-deploy k8s' writes them into a Kubernetes Deployment.
{REF_HELP}"""
)
@click.argument("refs", metavar="REF...", nargs=-1, required=True)
@_version_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8000,
    envvar="PORT",
    show_default=True,
    type=int,
    help="Port; 0 picks a free one. $PORT sets it too (as in the images this builds).",
)
@click.option(
    "--ready-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the server's URL to this file (JSON) once it answers requests: for scripts.",
)
@_server_options
@click.option(
    "--loaded-by-parent",
    is_flag=True,
    hidden=True,
    help="Each REF (and --canary, --shadow REF) is a bundle folder that notebook_deploy.serve loaded (and "
    "scanned, if from elsewhere).",
)
@click.pass_obj
@_errors_as_messages
def serve(
    store: Store,
    refs: tuple[str, ...],
    canary: tuple[str, ...],
    shadow: tuple[str, ...],
    sticky_header: str | None,
    host: str,
    port: int,
    ready_file: Path | None,
    loaded_by_parent: bool,
    **options: Any,
) -> None:
    """Serve bundles over HTTP until interrupted (Ctrl+C); SIGTERM finishes the requests in flight first.

    Several REFs serve several models, each under its name (/v2/models/NAME, /v1/models/NAME). The model
    answers its own API (POST /predict ...), the Open Inference Protocol (/v2, as KServe,
    MLServer and Triton clients speak it), TF Serving's REST API (/v1/models/NAME:predict) and MLflow's
    /invocations; /metrics has Prometheus metrics and /docs the OpenAPI documentation."""
    from .api import load
    from .bundle import Bundle
    from .errors import SettingError
    from .serving.deployment import Deployment
    from .serving.runner import run
    from .serving.settings import ServeSettings

    settings = ServeSettings(**{name: value for name, value in options.items() if value is not None})
    # A folder notebook_deploy.serve already loaded is only checked against its manifest here: its pickle
    # was scanned there if it came from elsewhere, and it may be a version of a store other than this one.
    opened = (lambda ref: Bundle.open(Path(ref))) if loaded_by_parent else (lambda ref: load(ref, store))
    try:
        deployment = Deployment.parse(refs, canary, shadow, sticky_header, load=opened, follow=settings.follow)
        deployment.check(settings)
    except SettingError as error:
        hint = "REF..." if error.option == "refs" else flag(error.option)
        raise click.BadParameter(error.reason, param_hint=f"'{hint}'") from None
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise click.UsageError(
            "--tls-cert and --tls-key go together: give the certificate and its private key, or neither (plain HTTP)"
        )
    settings = settings.with_options(  # default to the store's key file and audit log
        keys_file=settings.keys_file or str(default_keys_file(store.root)),
        audit_log=settings.audit_log or str(default_audit_log(store.root)),
    )

    if not settings.allow_unsigned:  # refused here, before any worker starts (create_app checks again)
        from .provenance import check_trusted

        for bundle in deployment.bundles():
            check_trusted(bundle, settings.trust(), action="serve")

    def announce(url: str) -> None:
        served = ", ".join(bundle.ref for bundle in deployment.bundles())
        click.echo(f"Serving {served} at {url}  (API docs: {url}/docs; Ctrl+C stops)", err=True)

    run(deployment, host, port, settings, ready_file=ready_file, on_ready=announce)


@cli.command(
    epilog=f"""\b
Examples:
  notebook-deploy tag iris:3f2a9c1b7d4e prod    mark a version as prod
  notebook-deploy tag iris:3f2a latest          roll back: latest (what 'iris' means) moves to 3f2a…
  notebook-deploy tag iris --remove prod        remove the tag
{REF_HELP}"""
)
@click.argument("ref")
@click.argument("tag")
@click.option("--remove", is_flag=True, help="Remove TAG from REF's name instead of setting it.")
@click.option(
    "--require-compare",
    "policy_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Compare the version TAG points at now with REF first (see 'compare'), and refuse to move the tag "
    "when the limits of this policy file are broken.",
)
@click.option(
    "--traffic",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="With --require-compare: a prediction log to replay against REF (repeatable).",
)
@click.pass_obj
@_errors_as_messages
def tag(store: Store, ref: str, tag: str, remove: bool, policy_file: str | None, traffic: tuple[str, ...]) -> None:
    """Point TAG at the version REF names (moving it if it is set)."""
    if remove:
        name = ref.partition(":")[0]
        store.untag(name, tag)
        click.echo(f"Removed {name}:{tag}")
        return
    if traffic and not policy_file:
        raise click.UsageError("--traffic is replayed by --require-compare: pass a policy file too")
    if policy_file:
        from .compare import SERVING_LIMITS, compare, read_policy

        policy = read_policy(policy_file)
        name = ref.partition(":")[0]
        current = store.tags(name).get(tag)
        if current is None:
            click.echo(f"{name}:{tag} is not set yet: nothing to compare with", err=True)
        else:
            comparison = compare(
                f"{name}:{current}",
                ref,
                traffic=list(traffic) or None,
                store=store,
                measure_serving=bool(SERVING_LIMITS & policy.keys()),
            )
            click.echo(str(comparison), err=True)
            broken = comparison.violations(policy)
            if broken:
                raise click.ClickException(
                    f"{name}:{tag} stays at {current}: the comparison breaks the policy {policy_file}:\n  "
                    + "\n  ".join(broken)
                )
    bundle = store.tag(ref, tag)
    click.echo(f"{bundle.name}:{tag} -> {bundle.version}")


@cli.command(
    epilog=f"""\b
Examples:
  notebook-deploy rm iris:3f2a9c1b7d4e     delete one version
  notebook-deploy rm iris --all            delete every version of iris
{REF_HELP}"""
)
@click.argument("ref")
@click.option("--all", "everything", is_flag=True, help="Delete every version of REF's name.")
@click.pass_obj
@_errors_as_messages
def rm(store: Store, ref: str, everything: bool) -> None:
    """Delete a bundle version; tags on it go too, and 'latest' falls back to the newest left."""
    if everything:
        name = ref.partition(":")[0]
        for bundle in store.list(name):
            store.delete(bundle.ref)
            click.echo(f"Deleted {bundle.ref}")
        return
    bundle = store.delete(ref)
    click.echo(f"Deleted {bundle.ref}")


@cli.command(
    "export",
    epilog=f"""\b
Examples:
  notebook-deploy export iris                        writes ./iris-VERSION.tar.gz
  notebook-deploy export iris:prod -o /tmp/iris.tar.gz
Import it elsewhere with: notebook-deploy import iris-VERSION.tar.gz
{REF_HELP}""",
)
@click.argument("ref")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=Path("."),
    help="The archive's path, or a folder to write NAME-VERSION.tar.gz in.  [default: .]",
)
@click.pass_obj
@_errors_as_messages
def export(store: Store, ref: str, output: Path) -> None:
    """Write a bundle as one .tar.gz file."""
    from .api import load

    path = load(ref, store).export(output)
    click.echo(str(path))


@cli.command(
    "import",
    epilog="""\b
Example:
  notebook-deploy import iris-3f2a9c1b7d4e.tar.gz
Every file is checked against the archive's manifest, and its signature against the trusted keys
('notebook-deploy trust list'), before the bundle is added.""",
)
@click.argument("archive", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--no-latest", is_flag=True, help=f"Add the version without moving the '{LATEST}' tag to it.")
@click.option(
    "--allow-unsigned", is_flag=True, help="Import it even if no trusted key signed it (written to the audit log)."
)
@click.pass_obj
@_errors_as_messages
def import_command(store: Store, archive: Path, no_latest: bool, allow_unsigned: bool) -> None:
    """Add a bundle archive made by 'export' to the store."""
    bundle = store.import_archive(archive, tag_latest=not no_latest, allow_unsigned=allow_unsigned)
    click.echo(f"Imported {bundle.ref}")


@cli.command(
    epilog="""\b
Examples:
  notebook-deploy deploy train.ipynb --model clf
  notebook-deploy deploy train.ipynb --model clf --name churn --sample "X_test[:5]" --reference-data
The notebook runs top to bottom in a fresh kernel in its own folder; then the variable is captured
with the cells that built it (its recipe), as %deploy does in a live notebook."""
)
@click.argument("notebook", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", "variable", required=True, help="The variable that holds the model.")
@click.option("--name", help="The bundle's name [default: the variable's name].")
@click.option("--sample", help="A Python expression giving a few input rows [default: the rows it was fitted on].")
@click.option("--include-data", is_flag=True, hidden=True, help="The default now; kept so older commands still run.")
@click.option(
    "--no-data", is_flag=True, help="Store no copies of the data files the recipe reads, only paths and sha256."
)
@click.option(
    "--reference-data",
    is_flag=True,
    help="Record data files above the 10 MiB cap by path and sha256 instead of refusing.",
)
@click.option(
    "--keep-fetched",
    is_flag=True,
    help="Keep the bytes of the URLs the recipe fetches in the bundle; verify's replay then reads them.",
)
@click.option("--allow-secrets", is_flag=True, help="Capture even if the recipe seems to hold credentials.")
@click.pass_obj
@_errors_as_messages
def deploy(
    store: Store,
    notebook: Path,
    variable: str,
    name: str | None,
    sample: str | None,
    include_data: bool,
    no_data: bool,
    reference_data: bool,
    keep_fetched: bool,
    allow_secrets: bool,
) -> None:
    """Run a notebook headless and capture one of its variables with its recipe."""
    from .jupyter.headless import deploy_notebook
    from .jupyter.variable import summary

    click.echo(f"Running {notebook} ...", err=True)
    bundle = deploy_notebook(
        notebook,
        variable,
        name=name,
        sample=sample,
        include_data=not no_data,
        reference_data=reference_data,
        keep_fetched=keep_fetched,
        allow_secrets=allow_secrets,
        store=store,
    )
    click.echo(summary(bundle, []))


@cli.command(
    epilog="""\b
Examples:
  notebook-deploy recipe train.ipynb --model clf
Reads the saved notebook without running it: cells in the order of their execution counts. A saved
notebook keeps only each cell's last run, so re-runs and edits after a run are lost (the warnings say
where it shows); %deploy in the live kernel, or 'notebook-deploy deploy', gives the exact recipe."""
)
@click.argument("notebook", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", "variable", required=True, help="The variable to rebuild.")
def recipe(notebook: Path, variable: str) -> None:
    """Show which cells of a saved notebook rebuild a variable."""
    from .capturing.recipe import build_recipe, history_from_notebook

    try:
        found = build_recipe(history_from_notebook(notebook), variable)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    for count, source in zip(found.counts, found.cells):
        click.echo(f"[{count}]")
        click.echo("    " + source.replace("\n", "\n    "))
    for data in found.files:
        click.echo(f"data: {data.path}" + ("" if data.size is not None else " (missing)"))
    for action in found.environment_actions:
        click.echo(f"environment: {action}")
    for warning in found.warnings:
        click.echo(f"warning: {warning}")


@cli.command(
    epilog=f"""\b
Examples:
  notebook-deploy verify churn                 replay the recipe in this Python environment
  notebook-deploy verify churn --fresh-env     ... in a new virtual environment built from the locks
  notebook-deploy verify churn --fresh-env --env-cache ~/.cache/nd-envs   ... kept for the next run
  notebook-deploy verify churn --data-dir /data/snapshots
Exit status 0 when the rebuilt model gives the stored outputs, 1 when it does not.
{REF_HELP}"""
)
@click.argument("ref")
@click.option(
    "--fresh-env",
    is_flag=True,
    help="Build a new virtual environment from the bundle's lock and its "
    "recipe's own requirements (recipe-requirements.txt) first.",
)
@click.option(
    "--env-cache",
    type=click.Path(file_okay=False),
    help="With --fresh-env: keep the environment in this folder, one per set of pins, and use it again "
    "when a later verify needs the same pins.",
)
@click.option(
    "--data-dir",
    type=click.Path(exists=True, file_okay=False),
    help="Where to find the recipe's data files when the bundle does not include them.",
)
@click.pass_obj
@_errors_as_messages
def verify(store: Store, ref: str, fresh_env: bool, env_cache: str | None, data_dir: str | None) -> None:
    """Rebuild a bundle's model from its recipe and compare it with the captured one."""
    from .verification import verify as run_verify

    if env_cache and not fresh_env:
        raise click.UsageError("--env-cache keeps the environments that --fresh-env builds: pass --fresh-env too")
    report = run_verify(
        ref,
        fresh_env=fresh_env,
        environments=env_cache,
        data_dir=data_dir,
        store=store,
        progress=lambda message: click.echo(f"... {message}", err=True),
    )
    click.echo(str(report))
    if not report:
        raise SystemExit(1)


@cli.command(
    epilog=f"""\b
Examples:
  notebook-deploy compare churn:prod churn:new
  notebook-deploy compare churn:prod churn:new --traffic traffic.jsonl --policy policy.yaml
  notebook-deploy compare churn:prod churn:new --json --no-measure
A policy file (YAML or JSON) sets limits; the exit status is 1 when one is broken, e.g.
  block_breaking_schema: true
  min_sample_agreement: 0.99
  max_latency_ratio: 1.5
The limits a policy may set:
{POLICY_HELP}
{REF_HELP}"""
)
@click.argument("old")
@click.argument("new")
@click.option(
    "--traffic",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="A prediction log to replay against NEW (repeatable; rotated logs oldest first).",
)
@click.option(
    "--policy", "policy_file", type=click.Path(exists=True, dir_okay=False), help="Limits to check the diff against."
)
@click.option("--no-measure", is_flag=True, help="Skip measuring start, latency and memory in fresh Pythons.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@click.pass_obj
@_errors_as_messages
def compare(
    store: Store, old: str, new: str, traffic: tuple[str, ...], policy_file: str | None, no_measure: bool, as_json: bool
) -> None:
    """Before moving a tag from OLD to NEW: the schema changes that break callers, how the answers agree
    on OLD's sample (and recorded traffic), the lock's changes, and start, latency and memory side by side."""
    from .compare import compare as run_compare
    from .compare import read_policy

    policy = read_policy(policy_file) if policy_file else {}
    comparison = run_compare(old, new, traffic=list(traffic) or None, store=store, measure_serving=not no_measure)
    broken = comparison.violations(policy)
    if as_json:
        click.echo(json.dumps(comparison.to_dict() | {"violations": broken}, indent=2))
    else:
        click.echo(str(comparison))
        for line in broken:
            click.echo(f"POLICY BROKEN {line}")
    if broken:
        raise SystemExit(1)


@cli.command(
    epilog=f"""\b
Examples:
  notebook-deploy serve churn:prod --prediction-log traffic.jsonl     record, then:
  notebook-deploy replay traffic.jsonl --against churn:new
  notebook-deploy replay traffic.jsonl.1 traffic.jsonl --against churn:new --min-agreement 0.99
  notebook-deploy replay traffic.jsonl --against churn:new --json > replay.json
Rotated logs go oldest first. Exit status 1 when the agreement is below --min-agreement.
{REF_HELP}"""
)
@click.argument("logs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--against", "candidate", required=True, help="The version to send the recorded rows to.")
@click.option(
    "--baseline",
    help="The version timed beside it [default: the version that answered in the log, if the store has it].",
)
@click.option("--rtol", type=float, default=RTOL, show_default=True, help="Relative tolerance for scores.")
@click.option("--atol", type=float, default=ATOL, show_default=True, help="Absolute tolerance for scores.")
@click.option("--worst", type=click.IntRange(0), default=5, show_default=True, help="Disagreeing rows to show.")
@click.option("--limit", type=click.IntRange(1), help="Replay only the last N rows.")
@click.option("--min-agreement", type=click.FloatRange(0, 1), help="Exit with status 1 below this share.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_obj
@_errors_as_messages
def replay(
    store: Store,
    logs: tuple[str, ...],
    candidate: str,
    baseline: str | None,
    rtol: float,
    atol: float,
    worst: int,
    limit: int | None,
    min_agreement: float | None,
    as_json: bool,
) -> None:
    """Send the rows of a prediction log to another version, in this process (no server), and report how
    its answers agree with the recorded ones, per class, with latencies side by side."""
    from .replay import replay as run_replay

    report = run_replay(list(logs), candidate, baseline, store=store, rtol=rtol, atol=atol, worst=worst, limit=limit)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else str(report))
    if min_agreement is not None and report.agreement < min_agreement:
        raise SystemExit(1)


BASE_HELP = (
    "The base image [default: python:3.X-slim, matching the bundle's Python]. A CUDA base (one that sets "
    "CUDA_VERSION, as NVIDIA's do) gets the CUDA builds of what the lock pins as CPU builds (torch)."
)


@cli.command(
    epilog=f"""\b
Examples:
  notebook-deploy push iris registry.example.com/models/iris:1
  notebook-deploy push iris:prod 127.0.0.1:5000/models/iris:prod --base 127.0.0.1:5000/base/python:3.11
Builds the image as data (no Docker daemon needed): the base (default python:3.X-slim for the
bundle's Python), then the Python dependencies, the notebook-deploy runtime and the bundle as layers.
The image serves the bundle on port 8000 (or $PORT). Credentials come from ~/.docker/config.json
(credential helpers included) or REGISTRY_USERNAME / REGISTRY_PASSWORD. Blobs the registry already
has are not sent again, so a push after a model-only change uploads only the bundle layer.
Every push attaches the image's SBOM (CycloneDX) and provenance (in-toto) in the registry, and signs
the image in cosign's format when a signing key exists (see 'notebook-deploy verify-image').
{REF_HELP}"""
)
@click.argument("ref")
@click.argument("image")
@click.option("--base", help=BASE_HELP)
@click.option("--platform", default="linux/amd64", show_default=True, type=click.Choice(["linux/amd64", "linux/arm64"]))
@click.option(
    "--backend",
    default="auto",
    show_default=True,
    type=click.Choice(BACKENDS),
    help="daemonless: the registry's HTTP API; docker: load into a Docker daemon and push from it; "
    "auto: docker when a daemon answers.",
)
@click.option(
    "--sign/--no-sign",
    default=None,
    help="Sign the image with the signing key [default: when one exists; --sign fails without one].",
)
@click.pass_obj
@_errors_as_messages
def push(store: Store, ref: str, image: str, base: str | None, platform: str, backend: str, sign: bool | None) -> None:
    """Build the image that serves a bundle and push it to a registry."""
    from .image.publish import push as push_image

    click.echo(f"Building and pushing {image} ...", err=True)
    click.echo(
        str(
            push_image(ref, image, base=base, platform=platform, backend=backend, store=store, progress=True, sign=sign)
        )
    )


@cli.command(
    "verify-image",
    epilog="""\b
Examples:
  notebook-deploy verify-image registry.example.com/models/iris:1
  notebook-deploy verify-image 127.0.0.1:5000/models/iris:prod --key signer.pub.pem
Checks, in the registry: the image's cosign signature (the sha256-<digest>.sig tag) against the
trusted keys ('notebook-deploy trust list') or the public key given; that the signed payload names
this image's manifest digest (a moved tag or a copied signature fails); that the signed in-toto
provenance names the image digest and the bundle digest the image is labelled with; and that the
SBOM is the one the provenance names and valid CycloneDX. Exit status 0 when all hold, 1 otherwise.""",
)
@click.argument("image")
@click.option(
    "--key",
    "key_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A public key (PEM) to verify with instead of the trusted keys.",
)
@click.pass_obj
@_errors_as_messages
def verify_image(store: Store, image: str, key_file: Path | None) -> None:
    """Check a pushed image's signature, provenance and SBOM."""
    from .image.trust import verify_image as verify
    from .signing import TrustStore

    click.echo(str(verify(image, key_file, trust=TrustStore(root=store.root))))


@cli.command(
    epilog=f"""\b
Examples:
  notebook-deploy build iris models/iris:1                    into the Docker daemon, if one answers
  notebook-deploy build iris models/iris:1 --output iris.tar  a tar for 'docker load'
  notebook-deploy build iris models/iris:1 --layout --output iris-oci
{REF_HELP}"""
)
@click.argument("ref")
@click.argument("image")
@click.option("--base", help=BASE_HELP)
@click.option("--platform", default="linux/amd64", show_default=True, type=click.Choice(["linux/amd64", "linux/arm64"]))
@click.option("--output", "-o", type=click.Path(path_type=Path), help="Write the image here instead of into a daemon.")
@click.option("--layout", is_flag=True, help="Write an OCI layout folder rather than a tar.")
@click.pass_obj
@_errors_as_messages
def build(
    store: Store, ref: str, image: str, base: str | None, platform: str, output: Path | None, layout: bool
) -> None:
    """Build the image that serves a bundle, into a Docker daemon or a file, without pushing it."""
    from .image.publish import build_image

    backend = "daemonless" if output is not None or layout else "auto"
    click.echo(
        build_image(
            ref, image, base=base, platform=platform, backend=backend, output=output, layout=layout, store=store
        )
    )


@cli.command(
    epilog=f"""\b
Examples:
  notebook-deploy containerize iris --output build/iris
  docker build -t models/iris:1 build/iris
  docker build -t models/iris:1 --build-arg BASE=registry.example.com/base/python:3.11 build/iris
The folder holds a Dockerfile, the Python dependencies already installed for the platform, the
notebook-deploy runtime and the bundle: the build needs neither pip nor network, and gives the same
files as 'notebook-deploy push'.
{REF_HELP}"""
)
@click.argument("ref")
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="A new folder to write the build context in.",
)
@click.option("--base", help="The default of the Dockerfile's BASE argument [default: python:3.X-slim].")
@click.option("--platform", default="linux/amd64", show_default=True, type=click.Choice(["linux/amd64", "linux/arm64"]))
@click.pass_obj
@_errors_as_messages
def containerize(store: Store, ref: str, output: Path, base: str | None, platform: str) -> None:
    """Write a Docker build context (Dockerfile and files) for the image that serves a bundle."""
    from .image.context import containerize as write_context

    if output.exists():
        raise click.ClickException(f"{output} already exists: give a new folder")
    click.echo(str(write_context(ref, output, base=base, platform=platform, store=store)))


@cli.command(
    "k8s",
    epilog=f"""\b
Examples:
  notebook-deploy k8s iris:latest --image registry.example.com/iris:v1 | kubectl apply -f -
  notebook-deploy k8s iris --image registry.example.com/iris:v1 --replicas 3 --cpu 1 --memory 1Gi \\
      --api-keys-secret iris-keys --set workers=2 -o k8s/        then: kubectl apply -f k8s/
  notebook-deploy k8s iris --image registry.example.com/iris:v1 --kserve
  notebook-deploy k8s churn:prod --image registry.example.com/churn:prod --canary churn:3f2a=10 \
      --version-image churn:3f2a=registry.example.com/churn:3f2a --sticky-header X-User
                                     one Deployment whose server serves both versions
Writes a Deployment (probes on /healthz and /readyz, non-root, read-only root filesystem), a Service
on port 80 and a HorizontalPodAutoscaler on CPU; with --kserve, one KServe InferenceService instead.
IMAGE is the bundle's image, from 'notebook-deploy push'. --api-keys-secret names an existing Secret
whose keys.json is a key file ('notebook-deploy keys'); it is mounted and keys are required.
--set passes an option of 'notebook-deploy serve' as its environment variable (NOTEBOOK_DEPLOY_...).
{REF_HELP}""",
)
@click.argument("ref")
@click.option("--image", required=True, help="The image that serves the bundle (pushed with 'notebook-deploy push').")
@click.option("--name", help="The name of every object [default: the bundle's name].")
@click.option("--namespace", "-n", help="The namespace [default: none written, so kubectl's current one].")
@click.option("--replicas", default=2, show_default=True, type=int, help="Pods to start with.")
@click.option("--cpu", default="500m", show_default=True, help="CPU request per pod (the autoscaler's 100%).")
@click.option("--memory", default="512Mi", show_default=True, help="Memory request per pod.")
@click.option("--cpu-limit", help="CPU limit per pod [default: none, so no throttling].")
@click.option("--memory-limit", help="Memory limit per pod [default: the request].")
@click.option(
    "--gpus", default=0, show_default=True, type=int, help="NVIDIA GPUs per pod; the model is then served on cuda."
)
@click.option("--port", default=8000, show_default=True, type=int, help="The container's port.")
@click.option("--min-replicas", type=int, help="The autoscaler's minimum [default: --replicas].")
@click.option("--max-replicas", default=10, show_default=True, type=int, help="The autoscaler's maximum.")
@click.option(
    "--target-cpu",
    "target_cpu_utilization",
    default=70,
    show_default=True,
    type=int,
    help="The average CPU use the autoscaler aims at, in percent of the request.",
)
@click.option("--api-keys-secret", help="A Secret holding the API key file as keys.json; keys are then required.")
@click.option("--kserve", is_flag=True, help="Write a KServe InferenceService (Open Inference Protocol) instead.")
@_version_options
@click.option(
    "--version-image",
    "version_images",
    multiple=True,
    metavar="REF=IMAGE",
    help="The image of a --canary or --shadow REF (from 'notebook-deploy push'), whose bundle is copied into "
    "the pod (repeatable).",
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="OPTION=VALUE",
    help="An option of 'notebook-deploy serve', e.g. workers=2 or max-batch-size=32 (repeatable).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write one file per manifest into this folder [default: one YAML stream to standard output].",
)
@click.pass_obj
@_errors_as_messages
def k8s(
    store: Store,
    ref: str,
    image: str,
    settings: tuple[str, ...],
    version_images: tuple[str, ...],
    output: Path | None,
    **options: Any,
) -> None:
    """Write Kubernetes manifests that serve a bundle's image."""
    from .errors import KubernetesError
    from .kubernetes import kubernetes_manifests, manifests_yaml, write_manifests

    images: dict[str, str] = {}
    for given in version_images:
        version, equals, carrier = given.partition("=")
        if not equals or not version or not carrier:
            raise click.BadParameter(
                f"{given!r} is not REF=IMAGE (e.g. churn:3f2a=registry.example.com/churn:3f2a)",
                param_hint="'--version-image'",
            )
        images[version] = carrier
    serve_options: dict[str, str] = {}
    for setting in settings:
        option, equals, value = setting.partition("=")
        if not equals or not option:
            raise click.BadParameter(f"{setting!r} is not OPTION=VALUE (e.g. workers=2)", param_hint="'--set'")
        name = option.strip().lstrip("-").replace("-", "_")
        if name in options or name in ("ref", "image", "store"):  # would reach kubernetes_manifests twice
            raise click.BadParameter(
                f"{name.replace('_', '-')} is an argument of this command, not a server option: pass it as such",
                param_hint="'--set'",
            )
        serve_options[name] = value
    # the server options reach kubernetes_manifests' **serve_options as the strings given
    arguments: dict[str, Any] = {**options, **serve_options}
    try:
        manifests = kubernetes_manifests(ref, image, store=store, version_images=images, **arguments)
    except KubernetesError as error:
        flags = {p.name: max(p.opts, key=len) for p in click.get_current_context().command.params}
        hint = flags.get(error.option) or f"--set {error.option.replace('_', '-')}"
        raise click.BadParameter(error.reason, param_hint=f"'{hint}'") from None
    if output is None:
        click.echo(manifests_yaml(manifests), nl=False)
        return
    for path in write_manifests(manifests, output):
        click.echo(str(path))


@cli.command(
    "ray",
    epilog=f"""\b
Examples:
  ray start --head                                            a Ray instance on this machine, then:
  notebook-deploy ray iris                                    on it (or on $RAY_ADDRESS)
  notebook-deploy ray iris --address ray://head:10001 --replicas 2 --num-cpus 0.5
  notebook-deploy ray iris --autoscale 1:4                    1 to 4 replicas, by requests in flight
  notebook-deploy ray iris --delete                           remove the application again
  notebook-deploy ray churn:prod --canary churn:3f2a=10 --sticky-header X-User --shadow churn:9b1c
                                  one application: a deployment per version behind an ingress
Runs the bundle as a Ray Serve application named after it (--name), served by Ray Serve's proxy
under /NAME with the API of 'notebook-deploy serve' (http://127.0.0.1:8000/iris/predict ...).
The application outlives this command: the bundle travels inside its config, so replicas that
restart or scale up later get it. The cluster's Python needs notebook-deploy and the model's
requirements ('--pip-from-lock' installs the bundle's pinned requirements in the replicas).
Python: notebook_deploy.targets.ray.deploy("iris", num_replicas=2).
{REF_HELP}""",
)
@click.argument("ref")
@click.option(
    "--address",
    envvar="RAY_ADDRESS",
    show_envvar=True,
    default="auto",
    show_default=True,
    help="The Ray cluster; auto: the one running on this machine ('ray start --head').",
)
@click.option("--name", help="The Ray Serve application's name [default: the bundle's name].")
@click.option("--route-prefix", help="The path it is served under [default: /NAME].")
@click.option(
    "--replicas",
    "num_replicas",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Replicas, each with its own copy of the model.",
)
@click.option("--autoscale", metavar="MIN:MAX", help="Scale between MIN and MAX replicas instead of --replicas.")
@click.option("--num-cpus", type=click.FloatRange(min=0), help="CPUs Ray reserves per replica [default: Ray's, 1].")
@click.option(
    "--http-port",
    type=click.IntRange(min=1, max=65535),
    help="The port of Ray Serve's proxy, if this starts Ray Serve [default: 8000].",
)
@click.option("--pip-from-lock", is_flag=True, help="Install the bundle's pinned requirements in the replicas.")
@click.option("--delete", is_flag=True, help="Remove the application named --name (or REF's name) instead.")
@_version_options
@click.pass_obj
@_errors_as_messages
def ray_command(
    store: Store,
    ref: str,
    canary: tuple[str, ...],
    shadow: tuple[str, ...],
    sticky_header: str | None,
    address: str,
    name: str | None,
    route_prefix: str | None,
    num_replicas: int,
    autoscale: str | None,
    num_cpus: float | None,
    http_port: int | None,
    pip_from_lock: bool,
    delete: bool,
) -> None:
    """Run a bundle as a Ray Serve application, with the same HTTP API as 'serve'."""
    from .api import load
    from .targets import ray as ray_target

    if delete:
        ray_target.connect(address)
        application = name or load(ref, store).name
        ray_target.delete(application)
        click.echo(f"Deleted the Ray Serve application {application}")
        return
    autoscaling = None
    if autoscale is not None:
        low, colon, high = autoscale.partition(":")
        if not (colon and low.isdigit() and high.isdigit() and 1 <= int(low) <= int(high)):
            raise click.BadParameter(
                f"{autoscale!r} is not MIN:MAX with 1 <= MIN <= MAX (e.g. 1:4)", param_hint="'--autoscale'"
            )
        autoscaling = {**ray_target.DEFAULT_AUTOSCALING, "min_replicas": int(low), "max_replicas": int(high)}
    deployment = ray_target.deploy(
        ref,
        name=name,
        num_replicas=num_replicas,
        autoscaling=autoscaling,
        address=address,
        route_prefix=route_prefix,
        ray_actor_options=None if num_cpus is None else {"num_cpus": num_cpus},
        pip_from_lock=pip_from_lock,
        http_port=http_port,
        store=store,
        canary=canary,
        shadow=shadow,
        sticky_header=sticky_header,
    )
    click.echo(str(deployment))


@cli.command(
    epilog="""\b
Examples:
  notebook-deploy dashboard > notebook-deploy.json       then in Grafana: Dashboards > New > Import
  notebook-deploy dashboard --drift-threshold 0.25 -o dashboard.json
The panels, per version of each model: requests/s, 5xx share, p50/p99 latency, rows per batched call,
requests in flight and queued, and each feature's drift (PSI) with the threshold marked.""",
)
@click.option(
    "--drift-threshold",
    type=click.FloatRange(0),
    help="The PSI above which the drift panel shows a feature red [default: the server's, 0.2].",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the JSON here instead of printing it.")
def dashboard(drift_threshold: float | None, output: str | None) -> None:
    """Print a Grafana dashboard (JSON) for the Prometheus metrics the servers export at /metrics."""
    from .serving.dashboard import grafana_dashboard

    text = json.dumps(grafana_dashboard(drift_threshold), indent=2)
    if output:
        Path(output).write_text(text + "\n")
        click.echo(f"Wrote {output}", err=True)
    else:
        click.echo(text)


@cli.group(
    "cache",
    epilog="""\b
Examples:
  notebook-deploy cache ls
  notebook-deploy cache prune --older-than 30     remove what no build used in 30 days
  notebook-deploy cache prune                     remove every kept layer
push, build and export keep the dependency and runtime layers they build in the store's cache/layers,
keyed by what determines them (the requirement set, platform and Python; the runtime's files), and take
them from there when those are unchanged: a push after a model-only change builds only the bundle layer.""",
)
@click.pass_context
def cache_group(ctx: click.Context) -> None:
    """List and prune the built image layers kept for the next push."""
    from .image.publish import layer_cache

    ctx.obj = layer_cache(ctx.obj)


@cache_group.command("ls")
@click.pass_obj
@_errors_as_messages
def cache_ls(cache: Any) -> None:
    """List the kept layers: kind, size, packages, digest and when last used."""
    from datetime import datetime

    from .display import human_size

    found = cache.entries()
    if not found:
        click.echo(f"No layers kept in {cache.root}: the next push builds and keeps them.")
        return
    _echo_table(
        [("KIND", "SIZE", "PACKAGES", "DIGEST", "LAST USED")]
        + [
            (
                str(e.facts.get("kind")),
                human_size(e.layer.size),
                str(len(e.packages)),
                e.layer.digest[:19],
                datetime.fromtimestamp(e.used).strftime("%Y-%m-%d %H:%M"),
            )
            for e in found
        ]
    )
    click.echo(f"{len(found)} layer(s), {human_size(sum(e.layer.size for e in found))} in {cache.root}")


@cache_group.command("prune")
@click.option(
    "--older-than", type=click.FloatRange(min=0), metavar="DAYS", help="Only the layers no build used for DAYS days."
)
@click.pass_obj
@_errors_as_messages
def cache_prune(cache: Any, older_than: float | None) -> None:
    """Remove kept layers (all, or those unused for --older-than days); the next push rebuilds them."""
    from .display import human_size

    removed, freed = cache.prune(older_than * 86400 if older_than is not None else None)
    click.echo(f"Removed {removed} layer(s), {human_size(freed)}")


@cli.group(
    "keys",
    epilog="""\b
Examples:
  notebook-deploy keys create --role predict --name dashboard
  notebook-deploy keys list
  notebook-deploy keys revoke 3f2a9c1b
A server requires a key on every route but health and docs as soon as its key file has one (or with
'serve --auth'). Roles: predict reaches inference only; admin reaches metadata and monitoring too.
Keys are stored as hashes in keys.json in the store (or --keys-file / $NOTEBOOK_DEPLOY_KEYS_FILE);
creations and revocations are appended to the store's audit.log.""",
)
@click.option(
    "--keys-file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="NOTEBOOK_DEPLOY_KEYS_FILE",
    help="The key file [default: keys.json in the store, or $NOTEBOOK_DEPLOY_KEYS_FILE].",
)
@click.pass_context
def keys_group(ctx: click.Context, keys_file: Path | None) -> None:
    """Create, list and revoke the API keys that servers require."""
    from .keys import KeyStore

    ctx.obj = KeyStore(keys_file, root=ctx.obj.root)


@keys_group.command(
    "create",
    epilog="""\b
Examples:
  notebook-deploy keys create --role predict                 for a client that calls the model
  notebook-deploy keys create --role admin --name grafana    also /metadata, /metrics, monitoring
  KEY=$(notebook-deploy keys create --role predict)          only the key goes to standard output
Then:
  curl -X POST http://127.0.0.1:8000/predict -H "Authorization: Bearer $KEY" \\
       -H 'content-type: application/json' -d '{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
  nd.serve("iris", api_key=KEY) in Python sends it too.""",
)
@click.option(
    "--role",
    required=True,
    type=click.Choice(["predict", "admin"]),
    help="predict: inference only; admin: inference, metadata and monitoring.",
)
@click.option("--name", help="A name to recognise the key by in listings [default: ROLE-ID].")
@click.pass_obj
@_errors_as_messages
def keys_create(key_store: Any, role: str, name: str | None) -> None:
    """Create a key and print it; it is shown this once (only its hash is kept)."""
    key, record = key_store.create(role, name)
    click.echo(key)
    click.echo(
        f"Created key {record.id} ({record.name}, role {record.role}) in {key_store.path}.\n"
        "This is the only time the key is shown: keep it in a secret store. Send it as\n"
        "  Authorization: Bearer <key>",
        err=True,
    )


@keys_group.command(
    "list",
    epilog="""\b
Example:
  notebook-deploy keys list
Keys themselves are never shown: only their id, name, role and creation time.""",
)
@click.pass_obj
@_errors_as_messages
def keys_list(key_store: Any) -> None:
    """List the keys: id, name, role and creation time."""
    found = key_store.list()
    if not found:
        click.echo(
            f"No keys in {key_store.path}: servers need none (unless started with --auth). "
            "Create one: notebook-deploy keys create --role predict"
        )
        return
    _echo_table(
        [("ID", "NAME", "ROLE", "CREATED")] + [(k.id, k.name, k.role, k.created[:19].replace("T", " ")) for k in found]
    )


def _echo_table(rows: Sequence[tuple[str, ...]]) -> None:
    """Print rows as columns, the first row being the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


@keys_group.command(
    "revoke",
    epilog="""\b
Example:
  notebook-deploy keys revoke 3f2a9c1b
Running servers refuse the key from their next request (they re-read the key file when it changes).""",
)
@click.argument("key_id", metavar="ID")
@click.pass_obj
@_errors_as_messages
def keys_revoke(key_store: Any, key_id: str) -> None:
    """Revoke a key by its id (see 'keys list')."""
    record = key_store.revoke(key_id)
    click.echo(f"Revoked key {record.id} ({record.name}, role {record.role})")


@cli.group(
    "signing-key",
    epilog="""\b
Examples:
  notebook-deploy signing-key create
  notebook-deploy signing-key show
  notebook-deploy signing-key export -o alice.pem      give this file to colleagues
The first capture makes the key if there is none, and trusts it. The key is ~/.notebook_deploy/
signing-key.pem (or in $NOTEBOOK_DEPLOY_HOME, or $NOTEBOOK_DEPLOY_SIGNING_KEY), mode 0600. It is not an
API key ('notebook-deploy keys'): it signs bundles and images; API keys open a server's routes.""",
)
def signing_key_group() -> None:
    """Create, show and export the Ed25519 key that signs your bundles."""


@signing_key_group.command(
    "create",
    epilog="""\b
Example:
  notebook-deploy signing-key create
Its public key is trusted here at once, so your own bundles import and serve.""",
)
@_errors_as_messages
def signing_key_create() -> None:
    """Make a signing key (refused if there is one) and trust its public key."""
    from .signing import SigningKey, TrustStore

    key = SigningKey.create()
    TrustStore().add(key.public_pem(), name="own key")
    click.echo(
        f"Created signing key {key.key_id} at {key.path} (mode 0600); its public key is trusted here.\n"
        "Give colleagues its public key: notebook-deploy signing-key export -o KEY.pem"
    )


@signing_key_group.command(
    "show",
    epilog="""\b
Example:
  notebook-deploy signing-key show""",
)
@_errors_as_messages
def signing_key_show() -> None:
    """Print the signing key's id, file, whether it is trusted here, and its public key."""
    from .signing import SigningKey, TrustStore

    key = SigningKey.load()
    trusted = TrustStore().find(key.key_id) is not None
    click.echo(f"id       {key.key_id}\nfile     {key.path}\ntrusted  {'yes' if trusted else 'no'}")
    click.echo(key.public_pem().decode(), nl=False)


@signing_key_group.command(
    "export",
    epilog="""\b
Examples:
  notebook-deploy signing-key export -o alice.pem
  openssl pkey -pubin -in alice.pem -noout -text      the file is a standard PEM public key""",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the public key to this file [default: standard output].",
)
@_errors_as_messages
def signing_key_export(output: Path | None) -> None:
    """Print (or write) the public key that others trust with 'notebook-deploy trust add'."""
    from .signing import SigningKey

    pem = SigningKey.load().public_pem()
    if output is None:
        click.echo(pem.decode(), nl=False)
    else:
        output.write_bytes(pem)
        click.echo(str(output), err=True)


@cli.group(
    "trust",
    epilog="""\b
Examples:
  notebook-deploy trust add alice.pem --name alice
  notebook-deploy trust list
  notebook-deploy trust remove 3f2a9c1b7d4e5f60
'import' and 'serve' load only bundles signed by a trusted key (or with --allow-unsigned). The
trusted keys are the PEM files in ~/.notebook_deploy/trusted-keys/ (or $NOTEBOOK_DEPLOY_TRUST_DIR);
changes go to the audit log.""",
)
def trust_group() -> None:
    """Trust, list and stop trusting the public keys whose signed bundles may be loaded."""


@trust_group.command(
    "add",
    epilog="""\b
Example:
  notebook-deploy trust add alice.pem --name alice
Check the key's id with its owner first ('notebook-deploy signing-key show' prints it).""",
)
@click.argument(
    "public_key_file", metavar="PUBLIC_KEY_FILE", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--name", help="A name to recognise the key by [default: its id].")
@_errors_as_messages
def trust_add(public_key_file: Path, name: str | None) -> None:
    """Trust the Ed25519 public key in PUBLIC_KEY_FILE (PEM)."""
    from .signing import TrustStore

    key = TrustStore().add(public_key_file.read_bytes(), name=name)
    click.echo(f"Trusted key {key.key_id} ({key.name})")


@trust_group.command(
    "list",
    epilog="""\b
Example:
  notebook-deploy trust list""",
)
@_errors_as_messages
def trust_list() -> None:
    """List the trusted keys: id, name and file."""
    from .signing import TrustStore

    trust = TrustStore()
    found = trust.list()
    if not found:
        click.echo(
            f"No trusted keys in {trust.directory}: only --allow-unsigned loads bundles. "
            "Trust one: notebook-deploy trust add KEY.pem"
        )
        return
    _echo_table([("ID", "NAME", "FILE")] + [(k.key_id, k.name, str(k.path)) for k in found])


@trust_group.command(
    "remove",
    epilog="""\b
Example:
  notebook-deploy trust remove 3f2a9c1b7d4e5f60
Bundles signed only by that key are refused from then on.""",
)
@click.argument("key_id", metavar="ID")
@_errors_as_messages
def trust_remove(key_id: str) -> None:
    """Stop trusting a key by its id (see 'trust list')."""
    from .signing import TrustStore

    key = TrustStore().remove(key_id)
    click.echo(f"Removed trusted key {key.key_id} ({key.name})")


@cli.command(
    epilog=f"""\b
Examples:
  notebook-deploy sign iris:3f2a9c1b7d4e     your own capture from before bundles were signed
  notebook-deploy sign churn                 approve a colleague's bundle after review: your signature
                                             is added to theirs
Signing says you vouch for the bundle: whoever trusts your key will load it.
{REF_HELP}"""
)
@click.argument("ref")
@click.pass_obj
@_errors_as_messages
def sign(store: Store, ref: str) -> None:
    """Add your signature to a bundle's signed provenance statement."""
    from .api import load
    from .provenance import sign as sign_bundle
    from .signing import SigningKey

    bundle = load(ref, store)
    key = SigningKey.load()
    sign_bundle(bundle, key, audit_log=default_audit_log(store.root))
    click.echo(f"Signed {bundle.ref} with key {key.key_id}")


def main() -> None:
    """Entry point of the ``notebook-deploy`` script."""
    cli(prog_name="notebook-deploy")
