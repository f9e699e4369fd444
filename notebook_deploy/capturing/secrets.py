"""The credential scan: notebook cells kept in a recipe, and the plain-data globals a model's code reads.

A bundle is a set of plain files that gets copied, shared and pushed to registries, so a capture that would
store a credential is refused (unless the user passes ``allow_secrets=True``), and the message names the
cell and line with the secret masked.

Why not Yelp's ``detect-secrets`` (1.5.0, the version PyPI serves): tried on notebook lines through its
Python API, it did not fit.
- Its public ``scan_line`` scans "eagerly" and reported high-entropy strings on ``token = None``,
  ``%pip install scikit-learn==1.3.0``, ``!ls -la data/`` and ``train_test_split(X, random_state=42)``.
- The non-eager scan it runs on files exists only as a private function (``_process_line_based_plugins``).
  Its ``is_indirect_reference`` filter then drops every line of the form ``x = f(...)``: it missed
  ``client = WebClient("xoxb-...")``, ``engine = create_engine("postgresql://user:pw@host/db")`` and
  ``connect(host="db", password="...")``, the usual way a notebook holds a credential.
- It has no detector for ``github_pat_``, Hugging Face ``hf_`` or ``sk-proj-`` OpenAI keys (only its entropy
  check, which is what misfired above).
- It flagged the placeholders ``"YOUR_API_KEY"``, ``"xxx"`` and ``"changeme"``.
- Its settings are process-global state.
Fixing that means a disabled filter, custom plugins and our own placeholder filter on top of private API,
so the patterns below are our own. They are line-based regexes, because cells are IPython (magics, shell
lines) and not always valid Python.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from ..errors import CaptureError
from ..keys import KEY_PATTERN

__all__ = [
    "SecretFinding",
    "find_secrets_in_cells",
    "find_secrets_in_values",
    "find_secrets_in_texts",
    "check_no_secrets",
]


@dataclass(frozen=True)
class SecretFinding:
    """One credential found: what kind, where ("cell [3], line 2", "global 'API_TOKEN'") and a masked excerpt."""

    kind: str  # e.g. "AWS access key id", "private key", "password in an assignment", "GitHub token"
    where: str  # e.g. "cell 3, line 2" or "global 'API_TOKEN'"
    excerpt: str  # the offending text with the secret masked, e.g. 'AWS_KEY = "AKIA************MPLE"'


# ---------------------------------------------------------------------------------------------------------
# Patterns

# A Python string literal on one line (optional prefix), its content in group dq or sq.
_STR = r"""[rRuUbBfF]{0,2}(?:"(?P<dq>(?:[^"\\\n]|\\.)*)"|'(?P<sq>(?:[^'\\\n]|\\.)*)')"""

_PEM_BEGIN = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")
_PEM_END = re.compile(r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")
_GCP_KEY_FIELD = re.compile(r"""["']?private_key["']?\s*:\s*["']?\s*$""")

# Credentials recognisable by their own shape, wherever they appear on a line. Group v is the secret.
_PROVIDER: list[tuple[str, re.Pattern[str]]] = [
    ("AWS access key id", re.compile(r"(?<![A-Za-z0-9])(?P<v>(?:AKIA|ASIA)[A-Z0-9]{16})(?![A-Za-z0-9])")),
    ("GitHub token", re.compile(r"(?<![A-Za-z0-9_])(?P<v>gh[pousr]_[A-Za-z0-9]{36,251})(?![A-Za-z0-9_])")),
    ("GitHub token", re.compile(r"(?<![A-Za-z0-9_])(?P<v>github_pat_[A-Za-z0-9_]{40,})")),
    ("Slack webhook URL", re.compile(r"hooks\.slack\.com/services/(?P<v>T[A-Za-z0-9_]+/B[A-Za-z0-9_]+/[A-Za-z0-9_]+)")),
    ("Slack token", re.compile(r"(?<![A-Za-z0-9])(?P<v>xox[abposr]-[A-Za-z0-9-]{10,})")),
    ("Stripe live secret key", re.compile(r"(?<![A-Za-z0-9])(?P<v>[sr]k_live_[A-Za-z0-9]{16,})(?![A-Za-z0-9])")),
    ("OpenAI-style API key", re.compile(r"(?<![A-Za-z0-9_-])(?P<v>sk-[A-Za-z0-9_-]{20,})")),
    ("Hugging Face token", re.compile(r"(?<![A-Za-z0-9_])(?P<v>hf_[A-Za-z0-9]{30,})(?![A-Za-z0-9_])")),
    ("Google API key", re.compile(r"(?<![A-Za-z0-9_-])(?P<v>AIza[0-9A-Za-z_-]{35})(?![A-Za-z0-9_-])")),
    ("Azure storage account key", re.compile(r"(?i)AccountKey\s*=\s*(?P<v>[A-Za-z0-9+/]{20,}={0,2})")),
    ("Azure shared access key", re.compile(r"(?i)SharedAccessKey\s*=\s*(?P<v>[A-Za-z0-9+/]{20,}={0,2})")),
    ("notebook-deploy API key", re.compile(rf"(?<![A-Za-z0-9_])(?P<v>{KEY_PATTERN.pattern})(?![A-Za-z0-9_-])")),
    ("GitLab token", re.compile(r"(?<![A-Za-z0-9_])(?P<v>gl(?:pat|dt|rt|ptt|cbt|oas)-[A-Za-z0-9_-]{20,})")),
    ("PyPI token", re.compile(r"(?<![A-Za-z0-9_])(?P<v>pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,})")),
    ("npm token", re.compile(r"(?<![A-Za-z0-9_])(?P<v>npm_[A-Za-z0-9]{36})(?![A-Za-z0-9_])")),
    (
        "SendGrid API key",
        re.compile(r"(?<![A-Za-z0-9_])(?P<v>SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43})(?![A-Za-z0-9_-])"),
    ),
    (
        "JSON Web Token",
        re.compile(r"(?<![A-Za-z0-9_-])(?P<v>eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,})"),
    ),
]

_URL_CREDENTIALS = re.compile(
    r"""(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]{0,30}://[^\s:/@"'<>{}]*:(?P<v>[^\s@/"'<>]+)@"""
)
_URL_QUERY = re.compile(
    r"""[?&](?P<name>access_token|auth_token|token|api_key|apikey|key|sig|password|pwd|secret|client_secret)"""
    r"""=(?P<v>[^&\s"'#<>]+)""",
    re.IGNORECASE,
)
_CONNECTION_PASSWORD = re.compile(r"""(?i)["';]\s*(?:password|pwd)\s*=\s*(?P<v>[^;"'\s]+)""")
_BEARER = re.compile(r"(?i)(?<![A-Za-z0-9])bearer\s+(?P<v>[A-Za-z0-9\-._~+/]{16,}=*)")
_BASIC = re.compile(r"(?i)(?<![A-Za-z0-9])basic\s+(?P<v>[A-Za-z0-9+/]{12,}={0,2})(?![A-Za-z0-9+/=])")

# Secret-named places that hold a string literal. Group name is the name, dq/sq the value.
# Matches start only where a name starts, and names and annotations are bounded: linear on long lines.
_ASSIGNMENT = re.compile(
    rf"(?<![\w.])(?P<name>[A-Za-z_][\w.]{{0,100}})[ \t]{{0,20}}(?::[ \t]*[\w.\[\], |]{{1,60}}?[ \t]*)?(?<![=!<>:])=(?!=)\s*{_STR}"
)
_SUBSCRIPT = re.compile(rf"""\[\s*[rRuUbB]?(?P<kq>["'])(?P<name>[^"'\n]{{1,100}})(?P=kq)\s*\]\s*=(?!=)\s*{_STR}""")
_DICT_ENTRY = re.compile(rf"""(?P<kq>["'])(?P<name>[^"'\n]{{1,100}})(?P=kq)\s*:\s*{_STR}""")
_ENV_CALL = re.compile(
    rf"""(?:setdefault|putenv|setenv)\(\s*[rRuUbB]?(?P<kq>["'])(?P<name>[^"'\n]{{1,100}})(?P=kq)\s*,\s*{_STR}"""
)
_ENV_MAGIC = re.compile(
    r"""^\s*%(?:env|set_env)\s+(?P<name>[A-Za-z_]\w*)(?:\s*=\s*|\s+)(?P<v>"[^"\n]*"|'[^'\n]*'|\S+)"""
)
_EXPORT = re.compile(r"""^\s*(?:!\s*)?export\s+(?P<name>[A-Za-z_]\w*)=(?P<v>"[^"\n]*"|'[^'\n]*'|\S+)""")
# In %%writefile (not .py), %%bash and %%sh cells: NAME=value, NAME: value, NAME = value (.env, YAML, INI)
_CONFIG_LINE = re.compile(
    r"""^\s*(?:-\s+)?(?:export\s+)?(?P<name>[A-Za-z_][\w.\-]*)\s*[:=]\s*"""
    r"""(?P<v>"[^"\n]*"|'[^'\n]*'|[^\s#"'()\[\]{},]+)\s*(?:#.*)?$"""
)
_CONFIG_CELL = re.compile(r"^\s*%%(?:writefile|file)\s+(?:-a\s+)?(?P<file>\S+)|^\s*%%(?:bash|sh|script)\b")

# Which names hold secrets: matched against the name in snake_case, at its end.
_NAME_CATEGORIES: list[tuple[str, re.Pattern[str]]] = [
    (
        "password",
        re.compile(r"(?:^|_)(?:password|passwd|passphrase|pwd|pw)s?$|.+_pass$"),
    ),  # "pass" alone: a filter band
    ("API key", re.compile(r"(?:^|_)api_?keys?$")),
    ("private key", re.compile(r"(?:^|_)private_?keys?$")),
    ("token", re.compile(r"(?:^|_)token$")),
    (
        "secret",
        re.compile(
            r"(?:^|_)(?:secrets?|(?:access|secret|account|auth|master|signing|encryption|subscription|license"
            r"|client|app|shared_access|sas|storage|service_account)_?keys?)$"
        ),
    ),
    ("credentials", re.compile(r"(?:^|_)(?:credentials?|creds)$")),
]
# Names that end like a secret's and are not one: tokenizer special tokens, pagination, multi-pass loops,
# public keys (.NET's publicKeyToken, Stripe's publishable key).
_NOT_SECRET_NAMES = re.compile(
    r"(?:^|_)(?:pad|eos|bos|unk|sep|cls|mask|sos|start|end|begin|special|eot|eom|image|audio|video|page|"
    r"next_page|continuation|decoder_start|default)_token$"
    r"|(?:^|_)(?:first|second|third|last|next|forward|backward|single|multi|one|two|n|num|train|eval|test)_pass$"
    r"|(?:^|_)(?:public|publishable)(?:_key)?_(?:key|token)$|(?:^|_)public_key$"
)

_PLACEHOLDER_WORDS = {
    "password", "passwd", "pass", "secret", "token", "key", "api_key", "apikey", "api-key", "changeme", "none",
    "null", "nil", "undefined", "true", "false", "default", "test", "admin", "root", "user", "username", "foo",
    "bar", "baz", "string", "str", "todo", "tbd", "n/a", "na", "empty", "unset", "missing", "hidden", "secret_key",
}  # fmt: skip
_PLACEHOLDER_TEXT = re.compile(
    r"your|change_?-?me|placeholder|dummy|redacted|replace|insert|todo|fixme|xxxx|\*\*\*|here\b|example|sample"
    r"|^test|^fake|^mock|^my[_-]?(?:password|token|secret|key|api)",
)
_TEMPLATE = re.compile(r"[<>{}]|\$\{?[A-Za-z_]|%\(|%s\b|\.\.\.|…")
_PATH = re.compile(
    r"^(?:~|\.{1,2})?[/\\]|^[A-Za-z]:\\"
    r"|\.(?:json|ya?ml|toml|txt|pem|key|p12|pfx|crt|cer|cfg|conf|ini|env|csv|pkl|gpg|asc)$",
    re.IGNORECASE,
)
_DIGEST = re.compile(r"^(?:sha\d*|md5|blake2[bs]?)[:-]", re.IGNORECASE)
_AWS_SECRET_NAME = re.compile(r"secret_?access_?key|aws_?secret")
_AWS_SECRET_VALUE = re.compile(r"[A-Za-z0-9/+]{40}")

_MAX_DEPTH = 6  # containers nested deeper than this inside a global are not scanned
_MAX_ITEMS = 10_000  # items scanned per container
_MAX_TEXT = 2_000_000  # characters scanned per string value
_EXCERPT_WIDTH = 160


# ---------------------------------------------------------------------------------------------------------
# Public functions


def find_secrets_in_cells(cells: Sequence[str], labels: Sequence[str] | None = None) -> list[SecretFinding]:
    """Credentials in notebook cells, in cell and line order.

    ``labels[i]`` names cell ``i`` in the findings (default ``"cell {i}"``, ``i`` being the index in
    ``cells``); line numbers are 1-based within the cell. Cells are IPython source: magics and shell
    lines are scanned as text, never parsed.
    """
    if labels is not None and len(labels) != len(cells):
        raise ValueError(f"{len(cells)} cells but {len(labels)} labels: give one label per cell, or none")
    findings: list[SecretFinding] = []
    for index, cell in enumerate(cells):
        label = labels[index] if labels is not None else f"cell {index}"
        for number, line, hits in _scan_text(cell, config=_is_config_cell(cell)):
            findings += [SecretFinding(hit.kind, f"{label}, line {number}", _excerpt(line, hits, hit)) for hit in hits]
    return findings


def find_secrets_in_values(values: Mapping[str, object]) -> list[SecretFinding]:
    """Credentials in the values of named globals.

    Strings and bytes are scanned, as are those inside dicts, lists, tuples and sets (to a bounded
    depth). A value also counts as a credential when the name holding it looks like a secret's
    (``DB_PASSWORD``, ``{"api_key": ...}``) and it is not a placeholder.
    """
    findings: list[SecretFinding] = []
    for name, value in values.items():
        for path, key, text in _strings(value, str(name), "", 0):
            findings += _value_findings(f"global {str(name)!r}{path}", f"{name}{path}", key, text)
    return findings


def find_secrets_in_texts(texts: Iterable[tuple[str, str]]) -> list[SecretFinding]:
    """Credentials by their shape in ``(where, text)`` pairs that no variable name labels: the strings
    inside the pickled model (an attribute holding a token) and the data files a bundle includes."""
    findings: list[SecretFinding] = []
    for where, text in texts:
        multiline = "\n" in text.strip("\r\n")
        for number, line, hits in _scan_text(text):
            here = f"{where}, line {number}" if multiline else where
            findings += [SecretFinding(hit.kind, here, _excerpt(line, hits, hit)) for hit in hits]
    return findings


def check_no_secrets(findings: Sequence[SecretFinding]) -> None:
    """Raise ``CaptureError`` listing every finding and the ways forward; return quietly when there are none."""
    if not findings:
        return
    count = len(findings)
    lines = [
        f"refusing to capture: {count} possible credential{'s' if count != 1 else ''} in what the bundle would keep "
        "(a bundle is plain files that get copied and shared, so a secret in it leaks):"
    ]
    lines += [f"  - {f.where}: {f.kind}: {f.excerpt}" for f in findings]
    lines.append(
        "Move each secret to an environment variable read at run time (for example "
        "password = os.environ[\"DB_PASSWORD\"]), run the changed cells again and capture again; or, if these "
        "are not secrets or you accept the risk, pass allow_secrets=True to capture (--allow-secrets for "
        "%deploy and the command line)."
    )
    error = CaptureError("\n".join(lines))
    error.findings = list(findings)  # type: ignore[attr-defined]
    raise error


# ---------------------------------------------------------------------------------------------------------
# Scanning text


@dataclass(frozen=True)
class _Hit:
    kind: str
    start: int  # the span of the secret itself, which is masked
    end: int
    claim_start: int  # the span no other finding on the line may overlap
    claim_end: int


def _scan_text(text: str, config: bool = False) -> Iterator[tuple[int, str, list[_Hit]]]:
    """(1-based line number, line, hits) for each line of ``text`` that holds a credential."""
    in_key = False
    for number, line in enumerate(text.splitlines(), 1):
        if in_key:  # the body of a multi-line private key: reported at its BEGIN line
            in_key = not _PEM_END.search(line)
            continue
        hits = _scan_line(line, config)
        if hits:
            yield number, line, hits
        begin = None
        begin = None
        for begin in _PEM_BEGIN.finditer(line):  # the last BEGIN of the line  # noqa: B007
            pass
        in_key = begin is not None and not _PEM_END.search(line, begin.end())


def _scan_line(line: str, config: bool) -> list[_Hit]:
    """The credentials on one line; the most specific kind wins where rules overlap."""
    hits: list[_Hit] = []

    def add(kind: str, start: int, end: int, claim: tuple[int, int] | None = None) -> None:
        claim_start, claim_end = claim or (start, end)
        if not any(claim_start < h.claim_end and h.claim_start < claim_end for h in hits):
            hits.append(_Hit(kind, start, end, claim_start, claim_end))

    for match in _PEM_BEGIN.finditer(line):
        end_marker = _PEM_END.search(line, match.end())
        body_end = end_marker.start() if end_marker else len(line)
        kind = "GCP service-account private key" if _GCP_KEY_FIELD.search(line, 0, match.start()) else "private key"
        add(kind, match.end(), body_end, (match.start(), end_marker.end() if end_marker else len(line)))
    for kind, pattern in _PROVIDER:
        for match in pattern.finditer(line):
            if _looks_random(kind, match.group("v")):
                add(kind, match.start("v"), match.end("v"))
    for match in _URL_CREDENTIALS.finditer(line):
        if not _is_placeholder(match.group("v"), "password"):
            add("password in a URL", match.start("v"), match.end("v"))
    for match in _URL_QUERY.finditer(line):
        category = {"key": "API key", "sig": "signature", "auth_token": "token"}.get(match.group("name").lower())
        category = category or _secret_category(match.group("name")) or "token"
        if not _is_placeholder(match.group("v"), category):
            add(f"{category} in a URL", match.start("v"), match.end("v"))
    for match in _CONNECTION_PASSWORD.finditer(line):
        if not _is_placeholder(match.group("v"), "password"):
            add("password in a connection string", match.start("v"), match.end("v"))
    for match in _BEARER.finditer(line):
        if not _is_placeholder(match.group("v"), "token"):
            add("bearer token", match.start("v"), match.end("v"))
    if "authorization" in line.lower():
        for match in _BASIC.finditer(line):
            if not _is_placeholder(match.group("v"), "token"):
                add("HTTP basic auth credentials", match.start("v"), match.end("v"))

    for pattern, where in ((_SUBSCRIPT, "an assignment"), (_ENV_CALL, "an assignment"), (_DICT_ENTRY, "a dict entry")):
        for match in pattern.finditer(line):
            _add_named(add, match, where)
    for match in _ASSIGNMENT.finditer(line):
        before = line[: match.start()].rstrip()
        _add_named(add, match, "a keyword argument" if before.endswith(("(", ",")) else "an assignment")
    for pattern, where in ((_ENV_MAGIC, "%env"), (_EXPORT, "an environment variable setting")):
        for match in pattern.finditer(line):
            _add_named(add, match, where)
    if config:
        for match in _CONFIG_LINE.finditer(line):
            _add_named(add, match, "a config line")
    return sorted(hits, key=lambda h: h.start)


def _add_named(add: Callable[[str, int, int], None], match: re.Match[str], where: str) -> None:
    """Report the string value a secret-named place holds, unless it is a placeholder."""
    group = next(g for g in ("dq", "sq", "v") if g in match.re.groupindex and match.group(g) is not None)
    start, end = match.span(group)
    value = match.group(group)
    if group == "v" and len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        start, end, value = start + 1, end - 1, value[1:-1]
    kind = _named_kind(match.group("name"), value, where)
    if kind:
        add(kind, start, end)


def _named_kind(name: str, value: str, where: str) -> str | None:
    """The kind of finding for ``value`` held by ``name``, or None if it is not a credential."""
    category = _secret_category(name)
    if category is None:
        return None
    if _AWS_SECRET_NAME.search(_snake(name)) and _AWS_SECRET_VALUE.fullmatch(value):
        return "AWS secret access key"
    if _is_placeholder(value, category):
        return None
    return f"{category} in {where}"


def _snake(name: str) -> str:
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name.strip())
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _secret_category(name: str) -> str | None:
    """ "password", "token", "API key", ... when ``name`` names a secret, else None."""
    norm = _snake(name)
    if not norm or _NOT_SECRET_NAMES.search(norm):
        return None
    return next((category for category, pattern in _NAME_CATEGORIES if pattern.search(norm)), None)


def _is_placeholder(value: str, category: str) -> bool:
    """Whether ``value`` held by a secret-named place is not a real secret (empty, template, name, path, ...)."""
    v = value.strip()
    low = v.lower()
    return (
        len(v) < (4 if category == "password" else 8)
        or low in _PLACEHOLDER_WORDS
        or bool(_TEMPLATE.search(v))
        or bool(_PLACEHOLDER_TEXT.search(low))
        or set(low) <= set("x*.#-_0? ")
        or bool(re.fullmatch(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+", v))  # an environment variable's name
        or bool(re.fullmatch(r"[a-z]+(?:_[a-z]+)+", v))  # a column or field name
        or bool(_PATH.search(v))
        or "://" in v
        or bool(_DIGEST.match(v))
        or (category != "password" and bool(re.search(r"\s", v)))
    )


def _looks_random(kind: str, value: str) -> bool:
    """Whether a provider-shaped match is a real key rather than a placeholder like ``ghp_XXXX...``."""
    if len(set(value)) < 10:
        return False
    if kind == "OpenAI-style API key":  # "sk-" + a long mixed-case, digit-bearing run, not "sk-some-words"
        return any(
            len(part) >= 16 and re.search(r"[a-z]", part) and re.search(r"[A-Z]", part) and re.search(r"\d", part)
            for part in re.split(r"[-_]", value[3:])
        )
    if kind == "Hugging Face token":
        return bool(re.search(r"[a-z]", value[3:]) and re.search(r"[A-Z]", value[3:]))
    return True


def _is_config_cell(cell: str) -> bool:
    """%%writefile of a non-Python file, %%bash or %%sh: lines there are NAME=value, not Python."""
    first = next((line for line in cell.splitlines() if line.strip()), "")
    match = _CONFIG_CELL.match(first)
    return match is not None and not (match.group("file") or "").endswith((".py", ".ipynb"))


# ---------------------------------------------------------------------------------------------------------
# Masking and excerpts


def _mask(secret: str) -> str:
    """``AKIA************MPLE``: first and last four kept only when long enough not to give much away."""
    if len(secret) >= 20:
        return secret[:4] + "*" * min(len(secret) - 8, 16) + secret[-4:]
    return "*" * min(len(secret), 16)


def _excerpt(line: str, hits: Sequence[_Hit], hit: _Hit) -> str:
    """The line with every secret on it masked, cut to a window around ``hit``."""
    masked, at = "", 0
    position = 0
    for h in sorted(hits, key=lambda h: h.start):
        masked += line[at : h.start]
        if h is hit:
            position = len(masked)
        masked += _mask(line[h.start : h.end])
        at = h.end
    masked += line[at:]
    stripped = masked.lstrip()
    position -= len(masked) - len(stripped)
    masked = stripped.rstrip()
    if len(masked) <= _EXCERPT_WIDTH:
        return masked
    start = max(0, min(position - 60, len(masked) - _EXCERPT_WIDTH))
    end = start + _EXCERPT_WIDTH
    return ("…" if start > 0 else "") + masked[start:end] + ("…" if end < len(masked) else "")


# ---------------------------------------------------------------------------------------------------------
# Values


def _strings(value: object, key: str, path: str, depth: int) -> Iterator[tuple[str, str, str]]:
    """(path like ``['db']['password']``, nearest name, text) for each string or bytes inside ``value``."""
    if isinstance(value, str):
        yield path, key, value[:_MAX_TEXT]
    elif isinstance(value, (bytes, bytearray)):
        yield path, key, bytes(value[:_MAX_TEXT]).decode("utf-8", errors="replace")
    elif depth >= _MAX_DEPTH:
        return
    elif isinstance(value, Mapping):
        for count, (k, v) in enumerate(value.items()):
            if count >= _MAX_ITEMS:
                break
            yield from _strings(v, k if isinstance(k, str) else key, f"{path}[{k!r}]", depth + 1)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for index, item in enumerate(value):
            if index >= _MAX_ITEMS:
                break
            yield from _strings(item, key, f"{path}[{index}]", depth + 1)


def _value_findings(where: str, expression: str, key: str, text: str) -> list[SecretFinding]:
    """Findings in one string value: credentials by shape on each of its lines, else by the name holding it."""
    scanned = list(_scan_text(text))
    multiline = "\n" in text.strip("\r\n")
    findings = []
    for number, line, hits in scanned:
        here = f"{where}, line {number}" if multiline else where
        for hit in hits:
            excerpt = _excerpt(line, hits, hit)
            if not multiline and len(excerpt) + len(expression) < _EXCERPT_WIDTH and not excerpt.startswith("…"):
                excerpt = f"{expression} = '{excerpt}'"
            findings.append(SecretFinding(hit.kind, here, excerpt))
    if not scanned and not multiline:
        kind = _named_kind(key, text, "a global")
        if kind:
            findings.append(SecretFinding(kind, where, f"{expression} = '{_mask(text.strip())}'"))
    return findings
