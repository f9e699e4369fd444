"""The observing recorder: what each execution read, fetched, changed and drew, and the recipes it makes.

Fingerprints are unit-tested here; everything else runs notebooks in real kernels (deploy_notebook, nbclient)
and replays the recipe with verify."""

from __future__ import annotations

import functools
import http.server
import sys
import threading
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import notebook_deploy as nd
from notebook_deploy.capturing import observation as observing
from notebook_deploy.capturing.observation import changes, fingerprint, snapshot, unseeded_estimators
from notebook_deploy.capturing.slicing import slice_cells


# -- fingerprints ----------------------------------------------------------------------------------------------
def test_an_in_place_change_through_any_name_shows_and_a_display_does_not():
    frame = pd.DataFrame({"a": [1, 2, 3], "income_cat": [0, 1, 0]})
    namespace = {"train": frame, "items": [1, 2], "model": LogisticRegression(), "np": np, "f": print}
    before = snapshot(namespace)
    assert "np" not in before and "f" not in before
    frame.nlargest(2, "a")
    frame.describe()
    changed, unchanged = changes(before, snapshot(namespace))
    assert changed == set() and {"train", "items", "model"} <= unchanged
    alias = namespace["train"]
    alias.drop("income_cat", axis=1, inplace=True)
    namespace["items"].append(3)
    namespace["model"].fit([[0.0], [1.0]], [0, 1])
    changed, _ = changes(before, snapshot(namespace))
    assert changed == {"train", "items", "model"}


def test_a_rebound_name_is_not_a_change_and_large_arrays_are_sampled():
    big = np.zeros(2_000_000)
    before = snapshot({"x": big, "y": 1})
    big[::1000] = 1.0  # touches sampled elements
    changed, unchanged = changes(before, snapshot({"x": big, "y": 2}))
    assert changed == {"x"} and "y" not in changed | unchanged
    assert fingerprint(object()) is None  # nothing to compare: never called unchanged


def test_a_large_pandas_index_is_sampled_too():  # it has no .iloc: its fingerprint was None (never compared)
    large = pd.Index(range(10_000))
    assert fingerprint(large) is not None
    assert fingerprint(large) != fingerprint(pd.Index(range(1, 10_001)))


def test_unseeded_estimators_are_the_fitted_ones_without_random_state():
    from sklearn.ensemble import RandomForestRegressor

    namespace = {
        "fitted": RandomForestRegressor(n_estimators=2).fit([[0.0], [1.0]], [0.0, 1.0]),
        "seeded": RandomForestRegressor(n_estimators=2, random_state=0).fit([[0.0], [1.0]], [0.0, 1.0]),
        "unfitted": RandomForestRegressor(),
    }
    assert unseeded_estimators(namespace, namespace) == ["fitted (RandomForestRegressor)"]


def test_the_alias_loop_is_kept_by_the_static_slicer_too():
    # the three-cell form: the static answer was [0, 2]
    cells = [
        'train = pd.read_csv("a.csv")\ntest = pd.read_csv("b.csv")',
        'for set_ in (train, test):\n    set_.drop("income_cat", axis=1, inplace=True)',
        'model = LinearRegression().fit(train[["x"]], train["y"])',
    ]
    assert slice_cells(cells, "model") == [0, 1, 2]
    assert slice_cells([*cells[:2], 'test["z"] = 1', cells[2]], "model") == [0, 1, 3]  # test stays apart


# -- in real kernels ------------------------------------------------------------------------------------------
def notebook(path: Path, *cells: str) -> Path:
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells]), path)
    return path


def kept(bundle: nd.Bundle) -> list[str]:
    return [c.source for c in nbformat.read(bundle.path / "recipe.ipynb", as_version=4).cells]


@pytest.fixture
def project(tmp_path):
    """A notebook folder beside a data folder, as a project lays them out."""
    rows = [(i % 7, (i * 3) % 5, int(i % 7 > 3), i % 2) for i in range(60)]
    (tmp_path / "data").mkdir()
    (tmp_path / "nb" / "local").mkdir(parents=True)
    (tmp_path / "data" / "train.csv").write_text(
        "a,b,y,income_cat\n" + "".join(f"{a},{b},{y},{c}\n" for a, b, y, c in rows)
    )
    (tmp_path / "nb" / "local" / "extra.csv").write_text("e\n" + "".join(f"{i / 10}\n" for i in range(60)))
    return tmp_path


OBSERVED = [
    "import os\nimport json\nimport numpy as np\nimport pandas as pd\nfrom sklearn.linear_model import LogisticRegression",
    "data_root = 'loc' + 'al/'\ndef load(name):\n    return pd.read_csv(os.path.join(data_root, name))",
    "extra = load('extra.csv')",
    "os.chdir(os.path.join('..', 'data'))",
    "train = pd.read_csv('train.csv')\ntest = train.copy()",
    "for set_ in (train, test):\n    set_.drop('income_cat', axis=1, inplace=True)",
    "train.nlargest(3, 'a')",
    "from sklearn.preprocessing import StandardScaler\ntrain.memory_usage(deep=True)",
    "print(json.dumps({'rows': len(train)}))",
    "from sklearn.pipeline import make_pipeline\n"
    "model = make_pipeline(StandardScaler(), LogisticRegression()).fit(train[['a', 'b']] + extra['e'].mean(), train['y'])",
]


@pytest.mark.integration
def test_observed_data_aliases_displays_and_imports(project, store):
    path = notebook(project / "nb" / "analysis.ipynb", *OBSERVED)
    bundle = nd.deploy_notebook(path, "model", sample="train[['a', 'b']]", store=store)
    recipe = bundle.manifest["recipe"]
    # +1: deploy_notebook runs %load_ext first; the display cells (nlargest, memory_usage, print) are left out
    assert recipe["executions"] == [2, 3, 4, 5, 6, 7, 9, 11], recipe
    sources = kept(bundle)
    assert sources[-3] == OBSERVED[5]  # the change through the loop variable is kept
    assert sources[-2] == "from sklearn.preprocessing import StandardScaler"  # trimmed to the import it gives
    # json serves only a display cell, numpy nothing
    assert sources[0] == "import os\nimport pandas as pd\nfrom sklearn.linear_model import LogisticRegression"
    files = {f["path"]: f for f in recipe["files"]}
    assert set(files) == {"local/extra.csv", "../data/train.csv"}  # computed, in a helper, and cwd-relative
    assert files["local/extra.csv"]["read_by"] == "pandas" and len(files["../data/train.csv"]["sha256"]) == 64
    reasons = dict(zip(recipe["executions"], recipe["reasons"]))
    assert "changes train" in reasons[7] and "reads file local/extra.csv" in reasons[4]
    assert "changes the working directory" in reasons[5] and reasons[9] == ["imports StandardScaler"]
    notebook_cells = nbformat.read(bundle.path / "recipe.ipynb", as_version=4).cells
    assert notebook_cells[-2].metadata["notebook_deploy"]["kept_because"] == ["imports StandardScaler"]
    assert notebook_cells[-2].metadata["notebook_deploy"]["trimmed_to_imports"] is True
    assert not [w for w in recipe["warnings"] if "randomness" in w]
    from notebook_deploy.jupyter.variable import summary

    assert "[9] (only its imports) imports StandardScaler" in summary(bundle, [])
    report = nd.verify(bundle)
    assert report.reproducible, str(report)


RANDOM = [
    "import random\nimport numpy as np\nfrom sklearn.ensemble import RandomForestRegressor",
    "def draw(n):\n    return np.random.randint(0, 10, n)",
    "order = list(range(5))\nrandom.shuffle(order)",  # an unseeded draw the model does not need
    "np.random.seed(0)",
    "X = draw(40).reshape(20, 2).astype(float)\ny = X[:, 0] * 2 + X[:, 1]",
    "model = RandomForestRegressor(n_estimators=5).fit(X, y)",
]


@pytest.mark.integration
def test_randomness_is_warned_from_what_kept_executions_drew(tmp_path, store):
    seeded = nd.deploy_notebook(notebook(tmp_path / "seeded.ipynb", *RANDOM), "model", sample="X[:5]", store=store)
    recipe = seeded.manifest["recipe"]
    assert recipe["executions"] == [2, 3, 5, 6, 7]
    assert not [w for w in recipe["warnings"] if "randomness" in w], recipe["warnings"]
    assert nd.verify(seeded).reproducible

    unseeded = nd.deploy_notebook(
        notebook(tmp_path / "unseeded.ipynb", *RANDOM[:3], *RANDOM[4:]), "model", sample="X[:5]", store=store
    )
    warnings = [w for w in unseeded.manifest["recipe"]["warnings"] if "randomness" in w]
    assert warnings == [
        "cell [5]: unseeded randomness: it drew from the global random state of numpy with no seed set before: "
        "replays may differ",
        "cell [6]: unseeded randomness: it drew from the global random state of numpy with no seed set before "
        "(it fitted model (RandomForestRegressor) with random_state=None): replays may differ",
    ]


@pytest.fixture
def web(project):
    """A local HTTP server of the data folder, on 127.0.0.1."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(project / "data"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.integration
def test_a_fetched_url_is_warned_of_and_kept_bytes_answer_the_replay_when_it_has_changed(project, web, store):
    fetching = [
        "import io\nimport pandas as pd\nimport requests\nfrom sklearn.linear_model import LogisticRegression",
        f"train = pd.read_csv('{web}/train.csv')",
        f"extra = pd.read_csv(io.StringIO(requests.get('{web}/train.csv?copy=1').text))",
        "model = LogisticRegression().fit(train[['a', 'b']] + extra['a'].mean(), train['y'])",
    ]
    path = notebook(project / "nb" / "web.ipynb", *fetching)
    kept = nd.deploy_notebook(path, "model", sample="train[['a', 'b']]", keep_fetched=True, store=store)
    plain = nd.deploy_notebook(path, "model", sample="train[['a', 'b']]", name="plain", store=store)
    fetched = kept.manifest["recipe"]["fetched"]
    assert [entry["url"] for entry in fetched] == [f"{web}/train.csv", f"{web}/train.csv?copy=1"]
    original = (project / "data" / "train.csv").read_bytes()
    assert all((kept.path / entry["file"]).read_bytes() == original for entry in fetched)
    assert "are kept in the bundle" in " ".join(kept.manifest["recipe"]["warnings"])
    assert not plain.manifest["recipe"]["fetched"]
    warnings = " ".join(plain.manifest["recipe"]["warnings"])
    assert f"cell [3] fetched {web}/train.csv: the replay fetches it again" in warnings
    assert f"cell [4] fetched {web}/train.csv?copy=1" in warnings and "--keep-fetched" in warnings
    assert nd.verify(plain).reproducible
    # the server now answers other rows: only the bundle that kept the bytes still rebuilds its model
    rows = [(i % 5, (i * 7) % 3, int(i % 3 == 0), 0) for i in range(40)]
    (project / "data" / "train.csv").write_text(
        "a,b,y,income_cat\n" + "".join(f"{a},{b},{y},{c}\n" for a, b, y, c in rows)
    )
    report = nd.verify(kept)
    assert report.reproducible, str(report)
    assert not nd.verify(plain).reproducible


def test_data_above_the_cap_is_refused_unless_referenced(project, store):
    from sklearn.linear_model import LogisticRegression as Model

    from notebook_deploy.capturing.recipe import History

    frame = pd.read_csv(project / "data" / "train.csv")
    model = Model().fit(frame[["a", "b"]], frame["y"])
    history = History(
        sources=[
            "import pandas as pd\nfrom sklearn.linear_model import LogisticRegression as Model",
            "frame = pd.read_csv('../data/train.csv')",
            "model = Model().fit(frame[['a', 'b']], frame['y'])",
        ],
        counts=[1, 2, 3],
        workdir=str(project / "nb"),
    )
    options = dict(name="lr", sample=frame[["a", "b"]], history=history, variable="model", store=store)
    with pytest.raises(nd.CaptureError, match=r"above the 0 MiB cap .*\.\./data/train\.csv .*--reference-data"):
        nd.capture(model, include_data=100, **options)
    bundle = nd.capture(model, include_data=100, reference_data=True, **options)
    [data] = bundle.manifest["recipe"]["files"]
    assert data["path"] == "../data/train.csv" and not data["included"] and len(data["sha256"]) == 64
    assert "referenced by path and sha256" in " ".join(bundle.warnings)
    assert nd.capture(model, include_data=True, **options).manifest["recipe"]["files"][0]["included"]


def test_the_modules_an_execution_first_loads_are_seen():
    import importlib

    before = list(sys.modules)
    name = next(m for m in ("colorsys", "sndhdr", "xdrlib", "wave", "chunk") if m not in sys.modules)
    importlib.import_module(name)
    assert name in observing.first_loaded(before)
    assert "os" not in observing.first_loaded(before)


def test_the_modules_of_the_objects_an_execution_binds_are_seen():
    """load_iris(as_frame=True) needs pandas even when pandas was imported long before: the frames in
    the Bunch it returns say so."""
    from sklearn.datasets import load_iris

    namespace = {"iris": load_iris(as_frame=True), "n": 3, "rows": [np.zeros(2)], "model": LogisticRegression()}
    assert observing.value_modules(namespace, ["iris", "n", "rows", "model"]) == {"sklearn", "pandas", "numpy"}
