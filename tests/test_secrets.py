"""The credential scan of recipe cells and captured globals (``notebook_deploy.capturing.secrets``).

Every secret here is fake but well formed (AWS's documented example keys, made-up tokens of the right
shape). They are assembled from pieces so that this file holds no literal token that a repository's
own secret scanning would stop.
"""

from __future__ import annotations

import textwrap
import time

import pytest

from notebook_deploy.capturing.secrets import (
    SecretFinding,
    check_no_secrets,
    find_secrets_in_cells,
    find_secrets_in_values,
)
from notebook_deploy.errors import CaptureError

AWS_ID = "AKIA" + "IOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY"
GH_CLASSIC = "ghp" + "_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
GH_OAUTH = "gho" + "_Z9y8X7w6V5u4T3s2R1q0P9o8N7m6L5k4J3i2"
GH_FINE = "github" + "_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUV01234"
SLACK_BOT = "xox" + "b-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"
SLACK_USER = "xox" + "p-123456789012-123456789012-123456789012-0a1b2c3d4e5f60718293a4b5c6d7e8f9"
STRIPE = "sk" + "_live_4eC39HqLyjWDarjtT1zdp7dcQw"
OPENAI = "sk" + "-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAB7cDE0fGH"
OPENAI_LEGACY = "sk" + "-T3stK3yAbCdEfGhIjKlMnOpQrStUvWxYz0123456789ab"
HF = "hf" + "_AbCdEfGhIjKlMnOpQrStUvWxYz01234567"
GOOGLE = "AI" + "zaSyD3x4mpl3K3y-1234567890abcdefghijk"
AZURE_KEY = "Zm9vYmFyYmF6cXV4" * 5 + "Zm9vYmFyYmF6cXV4Zm9vYmE=="
JWT = (
    "eyJ" + "hbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
KEY_BODY = "MIIEowIBAAKCAQEAx4f3Gk8pLmN2qR7sT9uV1wX3yZ5aB7cD9eF1gH3iJ5kL7mN9oP"
PASSWORD = "Tr0ub4dor&3"
HEX_SECRET = "3f9a1c7e5b2d4f6081a3c5e7f9b1d3f5a7c9e1b3"
JUPYTER_TOKEN = "c8de56fa4deed24899803e93c227592aef6538f93025fe01"


def pem(kind: str = "RSA ") -> str:
    return f"-----BEGIN {kind}PRIVATE KEY-----\n{KEY_BODY}\n{KEY_BODY[::-1]}\n-----END {kind}PRIVATE KEY-----"


def cell(source: str) -> str:
    return textwrap.dedent(source).strip("\n")


# (id, the cell's source, kind, line within the cell, the secret that must not show in the excerpt)
POSITIVE = [
    (
        "aws-access-key-id",
        f'''
        import boto3
        AWS_KEY = "{AWS_ID}"
        s3 = boto3.client("s3", aws_access_key_id=AWS_KEY)
     ''',
        "AWS access key id",
        2,
        AWS_ID,
    ),
    (
        "aws-secret-keyword",
        f'''
        s3 = boto3.client(
            "s3",
            aws_secret_access_key="{AWS_SECRET}",
        )
     ''',
        "AWS secret access key",
        3,
        AWS_SECRET,
    ),
    (
        "aws-credentials-file",
        f'''
        %%writefile ~/.aws/credentials
        [default]
        aws_secret_access_key = {AWS_SECRET}
        region = eu-west-1
     ''',
        "AWS secret access key",
        3,
        AWS_SECRET,
    ),
    (
        "rsa-private-key",
        f'''
        from cryptography.hazmat.primitives import serialization
        KEY = """{pem("RSA ")}"""
        private_key = serialization.load_pem_private_key(KEY.encode(), password=None)
     ''',
        "private key",
        2,
        KEY_BODY,
    ),
    (
        "openssh-private-key",
        f'''
        import paramiko, io
        key_text = """
        {textwrap.indent(pem("OPENSSH "), "        ").lstrip()}
        """
     ''',
        "private key",
        3,
        KEY_BODY,
    ),
    (
        "ec-private-key",
        f'''
        signing_key = (
            """{pem("EC ")}"""
        )
     ''',
        "private key",
        2,
        KEY_BODY,
    ),
    (
        "generic-private-key",
        f'''
        %%writefile deploy_key.pem
        {textwrap.indent(pem(""), "        ").lstrip()}
     ''',
        "private key",
        2,
        KEY_BODY,
    ),
    (
        "gcp-service-account",
        f'''
        sa_info = {{
            "type": "service_account",
            "project_id": "demo-project",
            "private_key": "-----BEGIN PRIVATE KEY-----\\n{KEY_BODY}\\n-----END PRIVATE KEY-----\\n",
            "client_email": "trainer@demo-project.iam.gserviceaccount.com",
        }}
        credentials = service_account.Credentials.from_service_account_info(sa_info)
     ''',
        "GCP service-account private key",
        4,
        KEY_BODY,
    ),
    (
        "github-classic-in-shell-line",
        f'''
        %pip install -q pygithub
        !git clone https://oauth2:{GH_CLASSIC}@github.com/acme/features.git
        %cd features
     ''',
        "GitHub token",
        2,
        GH_CLASSIC,
    ),
    (
        "github-fine-grained",
        f'''
        from github import Github
        gh = Github("{GH_FINE}")
        repo = gh.get_repo("acme/features")
     ''',
        "GitHub token",
        2,
        GH_FINE,
    ),
    (
        "github-oauth",
        f'''
        session.headers.update({{"Authorization": "token {GH_OAUTH}"}})
     ''',
        "GitHub token",
        1,
        GH_OAUTH,
    ),
    (
        "slack-bot-token",
        f'''
        from slack_sdk import WebClient
        client = WebClient(token="{SLACK_BOT}")
        client.chat_postMessage(channel="#ml", text=f"AUC {{auc:.3f}}")
     ''',
        "Slack token",
        2,
        SLACK_BOT,
    ),
    (
        "slack-user-token-in-env-magic",
        f'''
        %load_ext autoreload
        %autoreload 2
        %env SLACK_TOKEN={SLACK_USER}
     ''',
        "Slack token",
        3,
        SLACK_USER,
    ),
    (
        "stripe-live-key",
        f'''
        import stripe
        stripe.api_key = "{STRIPE}"
        charges = stripe.Charge.list(limit=100)
     ''',
        "Stripe live secret key",
        2,
        STRIPE,
    ),
    (
        "openai-project-key",
        f'''
        from openai import OpenAI
        client = OpenAI(api_key="{OPENAI}")
     ''',
        "OpenAI-style API key",
        2,
        OPENAI,
    ),
    (
        "openai-key-in-environ",
        f'''
        import os
        os.environ["OPENAI_API_KEY"] = "{OPENAI_LEGACY}"
     ''',
        "OpenAI-style API key",
        2,
        OPENAI_LEGACY,
    ),
    (
        "hugging-face-token",
        f'''
        %pip install -q huggingface_hub
        from huggingface_hub import login
        login(token="{HF}")
     ''',
        "Hugging Face token",
        3,
        HF,
    ),
    (
        "google-api-key",
        f'''
        url = f"https://maps.googleapis.com/maps/api/geocode/json?address={{addr}}&key={GOOGLE}"
     ''',
        "Google API key",
        1,
        GOOGLE,
    ),
    (
        "azure-connection-string",
        f'''
        from azure.storage.blob import BlobServiceClient
        conn = "DefaultEndpointsProtocol=https;AccountName=mldata;AccountKey={AZURE_KEY};EndpointSuffix=core.windows.net"
        blob_service = BlobServiceClient.from_connection_string(conn)
     ''',
        "Azure storage account key",
        2,
        AZURE_KEY,
    ),
    (
        "jwt-in-headers",
        f'''
        import requests
        headers = {{"Authorization": "Bearer {JWT}"}}
        resp = requests.get("https://api.example.com/v1/features", headers=headers)
     ''',
        "JSON Web Token",
        2,
        JWT,
    ),
    (
        "password-assignment",
        f'''
        DB_HOST = "warehouse.internal"
        db_pass = "{PASSWORD}"
        df = pd.read_sql("select * from sales", conn)
     ''',
        "password in an assignment",
        2,
        PASSWORD,
    ),
    (
        "password-assignment-plain",
        f'''
        import getpass
        user = getpass.getuser()
        password = "{PASSWORD}"
     ''',
        "password in an assignment",
        3,
        PASSWORD,
    ),
    (
        "annotated-token-assignment",
        f'''
        API_TOKEN: str = "{HEX_SECRET}"
     ''',
        "token in an assignment",
        1,
        HEX_SECRET,
    ),
    (
        "hex-api-key-assignment",
        f'''
        import wandb
        WANDB_API_KEY = "{HEX_SECRET}"
        wandb.login(key=WANDB_API_KEY)
     ''',
        "API key in an assignment",
        2,
        HEX_SECRET,
    ),
    (
        "environ-password",
        f'''
        import os
        os.environ["DB_PASSWORD"] = "{PASSWORD}"
     ''',
        "password in an assignment",
        2,
        PASSWORD,
    ),
    (
        "environ-setdefault",
        f'''
        os.environ.setdefault("MLFLOW_TRACKING_TOKEN", "{HEX_SECRET}")
     ''',
        "token in an assignment",
        1,
        HEX_SECRET,
    ),
    (
        "dict-entry",
        f'''
        db_config = {{
            "host": "warehouse.internal",
            "user": "analyst",
            "password": "{PASSWORD}",
        }}
     ''',
        "password in a dict entry",
        4,
        PASSWORD,
    ),
    (
        "keyword-argument",
        f'''
        import psycopg2
        conn = psycopg2.connect(host="warehouse.internal", user="analyst", password="{PASSWORD}")
        df = pd.read_sql("select * from sales", conn)
     ''',
        "password in a keyword argument",
        2,
        PASSWORD,
    ),
    (
        "url-with-credentials",
        '''
        from sqlalchemy import create_engine
        engine = create_engine("postgresql://analyst:Sup3rS3cretPw@warehouse.internal:5432/sales")
        df = pd.read_sql_table("orders", engine)
     ''',
        "password in a URL",
        2,
        "Sup3rS3cretPw",
    ),
    (
        "env-magic-password",
        f'''
        %matplotlib inline
        %env DB_PASSWORD={PASSWORD}
     ''',
        "password in %env",
        2,
        PASSWORD,
    ),
    (
        "odbc-connection-string",
        f'''
        conn = pyodbc.connect("DRIVER={{ODBC Driver 18}};SERVER=sql.internal;UID=analyst;PWD={PASSWORD};")
     ''',
        "password in a connection string",
        1,
        PASSWORD,
    ),
    (
        "jupyter-url-token",
        f'''
        # server: http://127.0.0.1:8888/lab?token={JUPYTER_TOKEN}
        X, y = load_iris(return_X_y=True)
     ''',
        "token in a URL",
        1,
        JUPYTER_TOKEN,
    ),
    (
        "dotenv-file-cell",
        f'''
        %%writefile .env
        DB_USER=analyst
        DB_PASSWORD={PASSWORD}
     ''',
        "password in a config line",
        3,
        PASSWORD,
    ),
    (
        "yaml-file-cell",
        f'''
        %%writefile config.yaml
        database:
          host: warehouse.internal
          password: "{PASSWORD}"
     ''',
        "password in a config line",
        4,
        PASSWORD,
    ),
    (
        "bearer-token",
        f'''
        resp = requests.post(url, json=rows, headers={{"Authorization": "Bearer {HEX_SECRET}"}})
     ''',
        "bearer token",
        1,
        HEX_SECRET,
    ),
]


@pytest.mark.parametrize(
    ("source", "kind", "line", "secret"), [case[1:] for case in POSITIVE], ids=[c[0] for c in POSITIVE]
)
def test_a_credential_in_a_cell_is_found_with_its_cell_and_line(source, kind, line, secret):
    cells = [
        "import pandas as pd\nfrom sklearn.ensemble import RandomForestClassifier",
        "%matplotlib inline",
        cell(source),
    ]
    findings = find_secrets_in_cells(cells)
    assert [(f.kind, f.where) for f in findings] == [(kind, f"cell 2, line {line}")]
    assert secret not in findings[0].excerpt
    assert "*" in findings[0].excerpt or kind.endswith("private key")


def test_the_aws_access_key_excerpt_keeps_only_the_ends():
    (finding,) = find_secrets_in_cells([f'AWS_KEY = "{AWS_ID}"'])
    assert finding == SecretFinding("AWS access key id", "cell 0, line 1", 'AWS_KEY = "AKIA************MPLE"')


def test_every_credential_on_a_line_is_reported_and_masked():
    line = f'client = Client(api_key="{HF}", password="{PASSWORD}")'
    findings = find_secrets_in_cells(["x = 1", line], labels=["cell [4]", "cell [7]"])
    assert [(f.kind, f.where) for f in findings] == [
        ("Hugging Face token", "cell [7], line 1"),
        ("password in a keyword argument", "cell [7], line 1"),
    ]
    for finding in findings:
        assert HF not in finding.excerpt and PASSWORD not in finding.excerpt


def test_a_long_line_is_cut_around_the_secret():
    line = "sa = " + repr(
        {"type": "service_account", "padding": "p" * 400, "private_key": f"{pem('')}", "more": "q" * 400}
    )
    (finding,) = find_secrets_in_cells([line])
    assert finding.kind == "GCP service-account private key"
    assert "PRIVATE KEY" in finding.excerpt and KEY_BODY not in finding.excerpt
    assert len(finding.excerpt) <= 170


NEGATIVE = [
    ("password-from-environ", 'password = os.environ["DB_PASSWORD"]\nconn = psycopg2.connect(password=password)'),
    ("password-from-getpass", "from getpass import getpass\npassword = getpass()\npwd = getpass.getpass('Password: ')"),
    ("token-none", "token = None\nif token is None:\n    token = os.getenv('HF_TOKEN')"),
    ("empty-password", 'password = ""\napi_key = \'\''),
    ("angle-placeholder", 'api_key = "<your key here>"'),
    ("upper-placeholder", 'api_key = "YOUR_API_KEY"\nOPENAI_API_KEY = "sk-your-key-here"'),
    ("xxx-placeholder", 'api_key = "xxx"\ntoken = "xxxxxxxxxxxxxxxx"\nsecret = "********"'),
    ("changeme-placeholder", 'password = "changeme"\nDB_PASSWORD = "password"'),
    (
        "template-placeholder",
        'engine = create_engine(f"postgresql://{user}:{password}@{host}/sales")\n'
        'url = "postgresql://user:password@localhost/db"\nsecret = "${DB_SECRET}"',
    ),
    (
        "provider-shaped-placeholders",
        'AWS_KEY = "AKIAXXXXXXXXXXXXXXXX"\ntoken = "ghp_XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"',
    ),
    (
        "column-names",
        'df["password_reset_count"] = df["password_reset_count"].fillna(0)\n'
        'df.loc[df["password_reset_count"] > 3, "risk"] = "high"\n'
        'df = df.rename(columns={"pwd": "password", "tok": "token_count"})',
    ),
    (
        "data-file-hashes",
        'expected = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"\n'
        'hashes = {"train.csv": "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"}',
    ),
    (
        "hyper-parameters",
        'model = GradientBoostingClassifier(n_estimators=200, learning_rate=0.05, max_depth=3, loss="log_loss")\n'
        'params = {"C": 0.1, "penalty": "l2", "solver": "liblinear"}',
    ),
    ("random-state", "X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=42)"),
    (
        "hex-ids",
        'run_id = "3f2a9c1b7d4e5f60718293a4b5c6d7e8"\nexperiment_id = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d"\n'
        'mlflow.start_run(run_id="3f2a9c1b7d4e5f60718293a4b5c6d7e8")',
    ),
    (
        "magics-and-shell",
        "%pip install scikit-learn==1.3.0\n!ls -la data/\n%%time\n%env CUDA_VISIBLE_DEVICES=0\n!pip freeze | grep torch",
    ),
    (
        "tokenizer-special-tokens",
        'tokenizer.add_special_tokens({"pad_token": "[PAD]"})\ntokenizer.pad_token = tokenizer.eos_token\n'
        'max_tokens = 512\ntokens = ["the", "quick", "brown", "fox"]\nmask_token = "[MASK]"',
    ),
    (
        "environ-non-secrets",
        'os.environ["TOKENIZERS_PARALLELISM"] = "false"\nos.environ["CUDA_VISIBLE_DEVICES"] = "0,1"',
    ),
    (
        "token-from-environ-call",
        'login(token=os.environ["HF_TOKEN"])\nclient = OpenAI(api_key=os.getenv("OPENAI_API_KEY"))',
    ),
    (
        "credential-file-paths",
        'credentials = "secrets/gcp-service-account.json"\nsecret_name = "prod/db/password"\n'
        'creds = service_account.Credentials.from_service_account_file("key.json")',
    ),
    (
        "comparisons-and-arguments",
        'if password == "":\n    raise ValueError("no password")\n'
        'parser.add_argument("--password", default="", help="database password")',
    ),
    (
        "urls-without-credentials",
        'df = pd.read_csv("https://example.com/data/iris.csv")\ndf2 = pd.read_parquet("s3://bucket/data/train.parquet")\n'
        'server = "http://localhost:8888/lab?token="',
    ),
    (
        "words-that-are-not-keys",
        'model_name = "sk-learn-preprocessing-pipeline-v2"\nmodel_id = "hf_internal_testing_tiny_random_bert"\n'
        'key = "species"\nmerged = left.merge(right, on="customer_id")',
    ),
    (
        "multi-pass-names",
        'first_pass = "normalise"\nsecond_pass = "deduplicate"\nband = {"pass": "bandpass", "stop": "bandstop"}[kind]',
    ),
    (
        "public-keys",
        '<assemblyIdentity name="Microsoft.VC90.CRT" publicKeyToken="1fc8b3b9a1e18e3b"/>\n'
        'STRIPE_PUBLISHABLE_KEY = "pk_test_TYooMQauvdEDq54NiTphI7jx"',
    ),
]


@pytest.mark.parametrize("source", [case[1] for case in NEGATIVE], ids=[case[0] for case in NEGATIVE])
def test_ordinary_notebook_code_is_not_a_credential(source):
    assert find_secrets_in_cells(["import os", source]) == []


def test_a_cell_that_is_not_python_does_not_break_the_scan():
    cells = ["%%bash\nfor f in data/*.csv; do wc -l $f; done", "def f(:\n  (((", "?? np.mean", f'token = "{HF}"']
    assert [(f.kind, f.where) for f in find_secrets_in_cells(cells)] == [("Hugging Face token", "cell 3, line 1")]


def test_a_huge_line_of_data_is_scanned_in_linear_time():
    started = time.monotonic()
    cells = ["blob = " + "a1b2" * 250_000, "QUJD" * 250_000, "x." * 250_000, "s3+" * 250_000]
    assert find_secrets_in_cells(cells) == []
    assert time.monotonic() - started < 10  # about a second; a quadratic pattern takes hours


def test_labels_must_name_every_cell():
    with pytest.raises(ValueError, match="one label per cell"):
        find_secrets_in_cells(["a = 1", "b = 2"], labels=["cell [1]"])


# ---- values of globals -----------------------------------------------------------------------------------


def test_a_global_holding_a_token():
    (finding,) = find_secrets_in_values({"API_TOKEN": GH_CLASSIC, "N_ESTIMATORS": 200})
    assert (finding.kind, finding.where) == ("GitHub token", "global 'API_TOKEN'")
    assert finding.excerpt.startswith("API_TOKEN = 'ghp_") and GH_CLASSIC not in finding.excerpt


def test_a_password_in_a_global_dict():
    config = {"db": {"host": "warehouse.internal", "port": 5432, "password": PASSWORD}, "features": ["a", "b"]}
    (finding,) = find_secrets_in_values({"CONFIG": config})
    assert (finding.kind, finding.where) == ("password in a global", "global 'CONFIG'['db']['password']")
    assert PASSWORD not in finding.excerpt


def test_a_token_in_a_nested_list():
    endpoints = [
        {"url": "https://api.example.com", "headers": ("Accept: application/json", f"Authorization: Bearer {JWT}")}
    ]
    (finding,) = find_secrets_in_values({"ENDPOINTS": endpoints})
    assert (finding.kind, finding.where) == ("JSON Web Token", "global 'ENDPOINTS'[0]['headers'][1]")
    assert JWT not in finding.excerpt


def test_a_secret_named_global_string():
    (finding,) = find_secrets_in_values({"DB_PASSWORD": PASSWORD})
    assert finding == SecretFinding("password in a global", "global 'DB_PASSWORD'", "DB_PASSWORD = '***********'")


def test_a_private_key_in_bytes_and_in_a_multiline_string():
    findings = find_secrets_in_values({"KEY": pem("RSA ").encode(), "NOTES": f"connect with\nkey={STRIPE}\n"})
    assert [(f.kind, f.where) for f in findings] == [
        ("private key", "global 'KEY', line 1"),
        ("Stripe live secret key", "global 'NOTES', line 2"),
    ]
    assert all(KEY_BODY not in f.excerpt and STRIPE not in f.excerpt for f in findings)


def test_plain_globals_are_not_credentials():
    values = {
        "FEATURES": ["sepal_length", "sepal_width", "petal_length", "petal_width"],
        "TOKEN": None,
        "PASSWORD_ENV": "DB_PASSWORD",
        "DB_PASSWORD": "",
        "API_KEY": "YOUR_API_KEY",
        "SPECIAL": {"pad_token": "[PAD]", "eos_token": "</s>"},
        "RUN_ID": "3f2a9c1b7d4e5f60718293a4b5c6d7e8",
        "DATA_SHA": b"sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "PARAMS": {"random_state": 42, "n_estimators": 100, "criterion": "gini"},
    }
    assert find_secrets_in_values(values) == []


def test_deep_and_self_referencing_values_end():
    loop: list[object] = ["x"]
    loop.append(loop)
    deep: object = PASSWORD
    for _ in range(50):
        deep = {"password": deep}
    assert find_secrets_in_values({"LOOP": loop, "DEEP": deep}) == []


# ---- refusing ---------------------------------------------------------------------------------------------


def test_findings_refuse_the_capture_naming_cell_and_line_and_the_way_forward():
    findings = find_secrets_in_cells(
        ["X, y = load()", f'import os\nAWS_KEY = "{AWS_ID}"'], labels=["cell [1]", "cell [3]"]
    )
    findings += find_secrets_in_values({"DB_PASSWORD": PASSWORD})
    with pytest.raises(CaptureError) as caught:
        check_no_secrets(findings)
    message = str(caught.value)
    assert "2 possible credentials" in message
    assert 'cell [3], line 2: AWS access key id: AWS_KEY = "AKIA************MPLE"' in message
    assert "global 'DB_PASSWORD': password in a global" in message
    assert "environment variable read at run time" in message and "allow_secrets=True" in message
    assert AWS_ID not in message and PASSWORD not in message
    assert caught.value.findings == findings


def test_no_findings_no_refusal():
    assert check_no_secrets([]) is None
    assert check_no_secrets(find_secrets_in_cells(["import numpy as np", "%pip install scikit-learn"])) is None


# -- this project's keys, more token formats, the pickled model and data files -----------------------------
GITLAB = "gl" + "pat-xY3kLm9PqR2sT5vW8zAb"
PYPI = "pypi" + "-AgEIcHlwaS5vcmcCJGI0ZjFhYzYzLTU3ZDEtNGZmZi1iZmE0LTc1ZGZhN2I2YjQ2MwACKlsz"
NPM = "npm" + "_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
SENDGRID = "SG" + ".ngeVfQFYQlKU0ufo8x5d1A.TwL2iGABf9DHoTf-09kqeF8tAmbihYzrnopKc-1s5cr"
PROJECT_KEY = "ndk" + "_0a1b2c3d_" + "Xy7" * 14 + "Q"  # the shape notebook_deploy.keys makes


@pytest.mark.parametrize(
    ("secret", "kind"),
    [
        (PROJECT_KEY, "notebook-deploy API key"),
        (GITLAB, "GitLab token"),
        (PYPI, "PyPI token"),
        (NPM, "npm token"),
        (SENDGRID, "SendGrid API key"),
        (SLACK_BOT, "Slack token"),
        (GH_FINE, "GitHub token"),
    ],
)
def test_token_formats_are_known_by_their_shape(secret, kind):
    from notebook_deploy.keys import KEY_PATTERN

    assert KEY_PATTERN.fullmatch(PROJECT_KEY)
    (finding,) = find_secrets_in_cells([f'client = Client("{secret}")'])  # the name says nothing
    assert finding.kind == kind and secret not in finding.excerpt


def test_a_token_kept_inside_the_model_refuses_the_capture(iris, store):
    from sklearn.linear_model import LogisticRegression

    import notebook_deploy as nd

    model = LogisticRegression(max_iter=300).fit(*iris)
    model.registry_login = {"user": "ci", "token": GITLAB}  # an attribute: no global, no cell holds it
    with pytest.raises(CaptureError, match="a string in the pickled model: GitLab token") as refused:
        nd.capture(model, sample=iris[0][:3], store=store)
    assert GITLAB not in str(refused.value) and store.names() == []


def test_a_token_in_an_included_data_file_refuses_the_capture(iris, store, tmp_path):
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    import notebook_deploy as nd
    from notebook_deploy.capturing.recipe import History

    frame = pd.DataFrame(iris[0][:, :2], columns=["a", "b"]).assign(y=iris[1])
    frame.to_csv(tmp_path / "train.csv", index=False)
    with open(tmp_path / "train.csv", "a") as f:
        f.write(f"# uploaded with {NPM}\n")
    model = LogisticRegression(max_iter=300).fit(frame[["a", "b"]], frame["y"])
    history = History(
        sources=[
            "import pandas as pd\nfrom sklearn.linear_model import LogisticRegression",
            'frame = pd.read_csv("train.csv", comment="#")',
            'model = LogisticRegression(max_iter=300).fit(frame[["a", "b"]], frame["y"])',
        ],
        counts=[1, 2, 3],
        workdir=str(tmp_path),
    )
    with pytest.raises(CaptureError, match=r"data file .*train.csv, line \d+: npm token"):
        nd.capture(
            model, sample=frame[["a", "b"]].head(), history=history, variable="model", include_data=True, store=store
        )
    nd.capture(model, sample=frame[["a", "b"]].head(), history=history, variable="model", store=store)  # not included
