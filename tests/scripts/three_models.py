"""Run by tests/test_fresh_venv.py inside a fresh virtual environment where only `pip install .` and the
model libraries were installed: fit three kinds of scikit-learn model, capture each, serve each, and
print a JSON report of in-process and HTTP predictions and of each bundle's lock."""

import json
import sys
from importlib import metadata

import boto3  # noqa: F401  - an unrelated package loaded in the session; it must stay out of every lock
import numpy as np
import pandas as pd
import requests
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_iris
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import notebook_deploy as nd


class NearestCentroid:
    """A model class defined in __main__, as in a notebook: cloudpickle must ship it by value."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        self.centroids_ = np.stack([X[y == c].mean(axis=0) for c in self.classes_])
        return self

    def predict(self, X):
        distances = ((np.asarray(X)[:, None, :] - self.centroids_[None]) ** 2).sum(axis=2)
        return self.classes_[distances.argmin(axis=1)]


X, y = load_iris(return_X_y=True)
rng = np.random.default_rng(0)
frame = pd.DataFrame(
    {
        "age": rng.integers(18, 80, 400),
        "income": rng.normal(50.0, 12.0, 400),
        "city": rng.choice(["paris", "rome", "oslo"], 400),
    }
)
target = (frame["age"] + rng.normal(0, 10, 400) > 45).astype(int)
columns = ColumnTransformer([("num", StandardScaler(), ["age", "income"]), ("cat", OneHotEncoder(), ["city"])])

models = {
    "boosting": (GradientBoostingClassifier(random_state=0).fit(X, y), X),
    "customers": (make_pipeline(columns, LogisticRegression()).fit(frame, target), frame),
    "centroids": (NearestCentroid().fit(X, y), X),
}
report = {"installed": {n: metadata.version(n) for n in ("scikit-learn", "numpy", "scipy", "pandas", "boto3")}}
for name, (model, data) in models.items():
    bundle = nd.capture(model, name=name, sample=data[:5])
    instances = bundle.input_schema.encode(data)
    with nd.serve(bundle) as server:
        http = requests.post(server.url + "/predict", json={"instances": instances}).json()["predictions"]
        client = server.predict(data)
    report[name] = {
        "type": bundle.manifest["model"]["type"],
        "in_process": np.asarray(model.predict(data)).tolist(),
        "http": http,
        "client_equal": bool(np.array_equal(client, model.predict(data))),
        "lock": bundle.lock(),
    }
json.dump(report, sys.stdout)
