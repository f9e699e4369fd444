"""Several versions and several models served from Python (``nd.serve(refs, canary=, shadow=,
sticky_header=)``), in a real child process over real HTTP: what ``notebook-deploy serve`` offers."""

from __future__ import annotations

import math
import os
import subprocess
import time

import numpy as np
import pytest
import requests
from served_metrics import predictions_counted
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

import notebook_deploy as nd
from notebook_deploy.errors import InputError, ServeError, SettingError
from notebook_deploy.serving.router import VERSION_HEADER

pytestmark = pytest.mark.integration

PERCENT = 30  # the canary's share of the requests


@pytest.fixture(scope="module")
def versions(forest, iris, pipeline, customers, tmp_path_factory):
    """A store of its own with three versions of "flowers" (stable, canary, shadow), each tagged, and the
    model "customers" (DataFrame rows)."""
    X, y = iris
    store = nd.Store(tmp_path_factory.mktemp("versions-store"))
    stable = nd.capture(forest, name="flowers", sample=X[:5], store=store)
    other = RandomForestClassifier(n_estimators=3, random_state=1).fit(X, y)
    canary = nd.capture(other, name="flowers", sample=X[:5], store=store)
    shadow = nd.capture(LogisticRegression(max_iter=500).fit(X, y), name="flowers", sample=X[:5], store=store)
    customers_bundle = nd.capture(pipeline, name="customers", sample=customers[0].head(), store=store)
    store.tag(stable.ref, "prod")
    store.tag(customers_bundle.ref, "prod")
    return store, stable, canary, shadow, customers_bundle


@pytest.fixture(scope="module")
def split(versions):
    """One server of "flowers": a canary at 30% (given as a Bundle), a shadow (one reference, not in a list),
    sticky on X-User."""
    store, _, canary, shadow, _ = versions
    with nd.serve(
        "flowers:prod", canary={canary: PERCENT}, shadow=shadow.ref, sticky_header="X-User", store=store
    ) as server:
        yield server


def test_the_canary_gets_its_share_and_the_shadow_a_copy_of_every_request(versions, split, iris):
    _, stable, canary, shadow, _ = versions
    rows = iris[0][::10]  # 15 rows, on which the two forests do not all agree
    by_ref = {stable.ref: stable, canary.ref: canary}
    before = predictions_counted(split.url).get(shadow.version, 0)
    count = 300
    answers = [split.post("predict", {"instances": rows.tolist()}) for _ in range(count)]
    assert {a.status_code for a in answers} == {200}
    named = [a.headers[VERSION_HEADER] for a in answers]
    assert set(named) == {stable.ref, canary.ref}
    for answer, ref in zip(answers, named):  # each answer is the prediction of the version its header names
        assert answer.json()["predictions"] == by_ref[ref].predict(rows).tolist()
    share = PERCENT / 100
    spread = 2.5758 * math.sqrt(count * share * (1 - share))  # a 99% binomial interval
    assert abs(named.count(canary.ref) - count * share) <= spread
    deadline = time.monotonic() + 60  # the copies run in the background
    while predictions_counted(split.url).get(shadow.version, 0) - before < count:
        assert time.monotonic() < deadline, "the shadow did not get a copy of every request"
        time.sleep(0.1)


def test_a_sticky_header_keeps_each_caller_on_one_version(versions, split):
    _, stable, canary, _, _ = versions
    with requests.Session() as session:
        reached = {
            user: {
                session.post(
                    split.url + "/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]}, headers={"X-User": user}
                ).headers[VERSION_HEADER]
                for _ in range(4)
            }
            for user in (f"user-{n}" for n in range(40))
        }
    assert all(len(seen) == 1 for seen in reached.values())
    assert set().union(*reached.values()) == {stable.ref, canary.ref}


def test_the_handle_shows_every_version(versions, split):
    _, stable, canary, shadow, _ = versions
    assert split.bundle == stable
    assert split.deployment.canary == ((canary, PERCENT),) and split.deployment.shadow == (shadow,)
    versions_row = f"{stable.ref} stable, {canary.ref} canary 30%, {shadow.ref} shadow"
    assert versions_row in str(split) and versions_row in split._repr_html_()
    assert "X-User" in str(split) and "POST /predict" in str(split)
    assert stable.ref in repr(split)


def test_two_models_each_answer_their_own_predictions_by_name(versions, iris, customers):
    """Served by their tags, followed: the child loads them from the store, as the CLI does."""
    store, stable, _, _, customers_bundle = versions
    X, frame = iris[0][:20], customers[0].head(20)
    with nd.serve(["flowers:prod", "customers:prod"], store=store, follow=True) as server:
        np.testing.assert_array_equal(server.predict(X, model="flowers"), stable.predict(X))
        np.testing.assert_array_equal(
            server.predict(X, "predict_proba", model="flowers"), stable.predict(X, "predict_proba")
        )
        np.testing.assert_array_equal(server.predict(frame, model="customers"), customers_bundle.predict(frame))
        with pytest.raises(ServeError, match=r"several models \(flowers, customers\): name one"):
            server.predict(X)
        with pytest.raises(ServeError, match="model 'roses' is not served here"):
            server.predict(X, model="roses")
        with pytest.raises(InputError, match="missing feature 'city'"):
            server.predict(frame.drop(columns=["city"]), model="customers")
        answer = server.post(
            "v1/models/customers:predict", {"instances": [{"age": 40, "income": 50.0, "city": "oslo"}]}
        )
        metadata = requests.get(server.url + "/metadata", timeout=30).json()
        assert server.models == {"flowers": stable, "customers": customers_bundle}
        assert "POST /v1/models/flowers:predict, POST /v1/models/customers:predict" in str(server)
    assert answer.headers[VERSION_HEADER] == customers_bundle.ref
    assert [(m["name"], m["follow"]["ref"]) for m in metadata] == [
        ("flowers", "flowers:prod"),
        ("customers", "customers:prod"),
    ]


@pytest.mark.parametrize(
    "options, option, fragment",
    [
        ({"canary": {"{canary}": 150}}, "canary", "from 0 to 100"),
        ({"canary": {"customers:prod": 10}}, "canary", "is not a version of a model served here (flowers)"),
        ({"canary": ["{canary}"]}, "canary", "is not REF=PERCENT"),
        ({"canary": {"{canary}": "ten"}}, "canary", "is not a percent"),
        ({"shadow": ["flowers:0000dead"]}, "shadow", "flowers:0000dead does not load"),
        ({"sticky_header": "X-User"}, "sticky_header", "it needs --canary"),
        ({"rollback_error_rate": 0.05}, "rollback_error_rate", "judges canaries: it needs --canary"),
        ({"refs": "{folder}", "follow": True}, "follow", "is a folder, not a tag of a store"),
    ],
)
def test_a_bad_option_is_refused_here_naming_it_before_any_server_starts(versions, options, option, fragment):
    store, stable, canary, _, _ = versions
    values = {"canary": canary.ref, "folder": str(stable.path)}
    options = {key: _filled(value, values) for key, value in options.items()}
    refs = options.pop("refs", "flowers:prod")
    before = _servers_started_here()
    with pytest.raises(SettingError) as raised:
        nd.serve(refs, store=store, **options)
    assert raised.value.option == option and fragment in raised.value.reason
    assert _servers_started_here() == before


def _filled(value, values):
    """``value`` with its ``{canary}`` and ``{folder}`` placeholders (in text, keys and items) filled."""
    if isinstance(value, str):
        return value.format(**values)
    if isinstance(value, dict):
        return {_filled(key, values): item for key, item in value.items()}
    if isinstance(value, list):
        return [_filled(item, values) for item in value]
    return value


def _servers_started_here() -> set[str]:
    """The process ids of this process's children that serve (``python -m notebook_deploy serve``)."""
    found = subprocess.run(
        ["pgrep", "-P", str(os.getpid()), "-f", "notebook_deploy .*serve"], capture_output=True, text=True
    )
    return set(found.stdout.split())
