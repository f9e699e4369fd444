"""Static slicing of a notebook's execution history: which executions rebuild a variable.

The history is a list of cell sources in execution order (a cell run twice appears twice). Each
execution is split into top-level statements; each statement gets

- ``strong`` symbols it (re)binds, which end a backward search (``x = ...``, ``def f``, ``import``);
- ``weak`` symbols it updates or may bind, which are kept and searched past (``model.fit(...)``,
  ``x += 1``, ``df["c"] = ...``, a binding inside an ``if``);
- ``kills`` (``del x``) and ``uses``, the symbols whose values it reads.

Symbols are variable names and pseudo-symbols: ``@file:PATH`` (files written then read back),
``@cwd`` (``%cd``), ``@rng:LIB`` (the global random state once a seed was set) and ``@state:PKG``
(library-wide configuration such as ``sklearn.set_config``). A forward pass in execution order keeps
what a static reading needs: which names are notebook functions and classes (their free globals are
read when they are *called*), alias and view groups (``best = model``, ``make_pipeline(scaler, clf)``),
objects that hold notebook code (``FunctionTransformer(poly)``), which package each value came from,
the working directory and the content of files written by ``%%writefile``.

The backward slice then starts at the end of the history with the target and includes every
execution that defines or updates what an included execution reads. An execution is replayed whole,
so the inputs of all its statements are followed, not only those of the statement that was needed.

Nothing here runs user code. Which methods mutate their object is data (``SliceRules``) that users
can extend; a method in neither list is taken to mutate, so that an unknown method is never lost.

Where the session recorder watched an execution (an ``Observation``), what it saw refines the text:
objects changed in place are updates whatever name the code used (an alias, a loop variable), an
unknown method call whose object did not change is not an update, files read and written and
the working directory are what the code really opened, and the random states are those that moved.
Without observations (a saved notebook, a recorder loaded late) the static answer stands.
"""

from __future__ import annotations

import ast
import builtins
import os
import posixpath
import re
import shlex
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace

from .observation import Observation

END = 1 << 62

# -- the rules, as data -----------------------------------------------------------------------------
_MUTATING = """
fit partial_fit fit_transform fit_predict fit_resample set_params set_output
append extend insert update pop popitem remove clear sort reverse add discard setdefault
load_state_dict step zero_grad train compile
"""
_PURE = """
predict predict_proba predict_log_proba decision_function score score_samples transform inverse_transform
get_params get_feature_names_out staged_predict staged_predict_proba apply
head tail describe info copy groupby agg aggregate mean sum std var min max median mode count value_counts
unique nunique isna isnull notna notnull dropna fillna drop drop_duplicates rename replace astype map
merge join pivot pivot_table melt stack unstack sort_values sort_index reset_index set_index query filter
select_dtypes corr cov quantile cumsum cumprod diff pct_change shift rolling expanding resample
iterrows itertuples items keys values get to_numpy to_list tolist to_dict to_frame to_string to_markdown
to_csv to_parquet to_json to_pickle to_excel to_feather to_hdf to_sql savefig
reshape ravel flatten argmax argmin argsort round clip any all dot nonzero squeeze transpose take
format split join strip lstrip rstrip lower upper startswith endswith encode decode
plot hist boxplot scatter bar barh line show legend set_title set_xlabel set_ylabel set_xlim set_ylim
subplots figure imshow heatmap pairplot display
"""
# Constructors whose result contains its arguments (a change to a member changes the whole).
_COMPOSITES = """
Pipeline make_pipeline FeatureUnion make_union ColumnTransformer make_column_transformer
VotingClassifier VotingRegressor StackingClassifier StackingRegressor BaggingClassifier BaggingRegressor
OneVsRestClassifier OneVsOneClassifier MultiOutputClassifier MultiOutputRegressor
GridSearchCV RandomizedSearchCV HalvingGridSearchCV CalibratedClassifierCV TransformedTargetRegressor
SelectFromModel RFE RFECV Sequential ModuleList ModuleDict
"""
# Library-wide settings: calling one of these updates the package's @state.
_CONFIG_CALLS = (
    "set_config set_option seterr set_printoptions set_default_dtype set_default_device use_deterministic_algorithms"
)
# scikit-learn callables that draw from NumPy's global random state unless given random_state.
_SKLEARN_RANDOM = """
train_test_split shuffle resample KFold StratifiedKFold ShuffleSplit StratifiedShuffleSplit
RandomForestClassifier RandomForestRegressor ExtraTreesClassifier ExtraTreesRegressor
GradientBoostingClassifier GradientBoostingRegressor HistGradientBoostingClassifier HistGradientBoostingRegressor
DecisionTreeClassifier DecisionTreeRegressor IsolationForest KMeans MiniBatchKMeans MLPClassifier MLPRegressor
SGDClassifier SGDRegressor Perceptron PCA TruncatedSVD NMF TSNE BaggingClassifier BaggingRegressor
AdaBoostClassifier AdaBoostRegressor RandomizedSearchCV make_classification make_regression make_blobs
"""
# file readers and writers: callable name -> index of the path argument
_READERS = {
    **{
        n: 0
        for n in "read_csv read_table read_parquet read_json read_excel read_pickle read_feather read_hdf "
        "read_fwf read_orc read_stata read_sas read_spss read_xml load loadtxt genfromtxt fromfile "
        "read_text read_bytes imread".split()
    },
}
_WRITERS = {
    **{
        n: 0
        for n in "to_csv to_parquet to_json to_pickle to_excel to_feather to_hdf to_orc to_stata to_xml "
        "save savez savez_compressed savetxt tofile savefig write_text write_bytes imwrite".split()
    },
    "dump": 1,
}
_RNG_SEEDS = {
    "numpy": {"seed", "set_state"},
    "random": {"seed", "setstate"},
    "torch": {"manual_seed", "seed"},
    "tensorflow": {"set_seed"},
}
_RNG_NOT_DRAWS = {
    "default_rng",
    "RandomState",
    "Generator",
    "get_state",
    "getstate",
    "Random",
    "SystemRandom",
    "SeedSequence",
    "PCG64",
    "MT19937",
    "initial_seed",
    "get_rng_state",
}
# Magics that change nothing a recipe replays: recorded as environment actions, or ignored.
_ENVIRONMENT_MAGICS = {"pip", "conda", "mamba", "uv", "sx", "system"}
_IGNORED_MAGICS = {
    "matplotlib",
    "load_ext",
    "reload_ext",
    "unload_ext",
    "autoreload",
    "aimport",
    "who",
    "whos",
    "who_ls",
    "config",
    "env",
    "history",
    "lsmagic",
    "magic",
    "pwd",
    "ls",
    "precision",
    "xmode",
    "pdb",
    "debug",
    "tb",
    "reset_selective",
    "pinfo",
    "pinfo2",
    "psearch",
    "page",
    "colors",
    "automagic",
    "notebook",
    "qtconsole",
    "connect_info",
    "load",
    "pycat",
    "doctest_mode",
    "deploy",
}
_CODE_CELL_MAGICS = {"time", "timeit", "capture", "prun", "debug"}
_BUILTINS = frozenset(dir(builtins)) | {"get_ipython", "display", "In", "Out", "exit", "quit"}


@dataclass(frozen=True)
class SliceRules:
    """Which method names mutate their object and which do not; composites and library calls too.

    A method in neither ``mutating`` nor ``pure`` is taken to mutate (a conservative choice).
    """

    mutating: frozenset[str]
    pure: frozenset[str]
    composites: frozenset[str] = frozenset(_COMPOSITES.split())
    mutating_functions: frozenset[str] = frozenset({"shuffle", "fill_diagonal", "copyto", "put", "place"})

    def extend(
        self, mutating: Iterable[str] = (), pure: Iterable[str] = (), composites: Iterable[str] = ()
    ) -> SliceRules:
        """Rules with these method names added (a name moves out of the other list)."""
        mutating, pure = frozenset(mutating), frozenset(pure)
        return replace(
            self,
            mutating=(self.mutating - pure) | mutating,
            pure=(self.pure - mutating) | pure,
            composites=self.composites | frozenset(composites),
        )


DEFAULT_RULES = SliceRules(
    mutating=frozenset(_MUTATING.split()), pure=frozenset(_PURE.split()) - frozenset(_MUTATING.split())
)


@dataclass
class Statement:
    """One top-level statement of one execution, with what it binds, updates, kills and reads."""

    cell: int
    strong: set[str] = field(default_factory=set)
    weak: set[str] = field(default_factory=set)
    kills: set[str] = field(default_factory=set)
    uses: set[str] = field(default_factory=set)
    unknown_star: bool = False  # `from unknown import *` or `%run` of an unknown file
    guessed: set[str] = field(default_factory=set)  # updates inferred from a call, not an assignment
    import_only: bool = False  # an import statement: a cell kept only for these keeps only them


@dataclass
class Slice:
    """The executions to replay for a target, and what the analysis noticed on the way."""

    target: str
    cells: list[int]
    files_read: list[str]  # data files the kept executions read and none wrote: the recipe's inputs
    environment_actions: list[str]
    warnings: list[str]
    reasons: dict[int, list[str]] = field(default_factory=dict)  # cell -> why it is kept
    cell_warnings: dict[int, list[str]] = field(default_factory=dict)  # kept cell -> what may make its replay differ
    only_statements: dict[int, list[int]] = field(default_factory=dict)  # cell -> the statements kept
    sources: dict[int, str] = field(default_factory=dict)  # cell -> the source replayed, when trimmed


def slice_cells(cells: Sequence[str], target: str, *, rules: SliceRules = DEFAULT_RULES) -> list[int]:
    """The ascending indices of the executions in ``cells`` (sources in execution order, IPython syntax)
    that must be replayed, in order, to recompute variable ``target``. Static: no code is executed."""
    return slice_history(cells, target, rules=rules).cells


def slice_history(
    cells: Sequence[str],
    target: str,
    *,
    rules: SliceRules = DEFAULT_RULES,
    observations: Sequence[Observation | None] = (),
    workdir: str | None = None,
) -> Slice:
    """``slice_cells`` with the details a recipe records: files read, environment actions, warnings,
    why each cell is kept. ``observations`` (aligned with ``cells``, None where nothing was watched)
    refine the static reading; their paths are made relative to ``workdir``, where the session started."""
    analysis = _Analysis(rules, workdir)
    for index, source in enumerate(cells):
        analysis.add_cell(index, source, observations[index] if index < len(observations) else None)
    return analysis.slice(target)


_NEAR_LEVELS = 3  # an absolute path at most this many folders above the session's is named relative to it


# -- IPython syntax -> analysable Python ----------------------------------------------------------------
MAGIC_CALL = "__nd_magic__"
_ASSIGNED_MAGIC = re.compile(r"^(\s*)([\w.,\s\[\]()*]+?)\s*=\s*([!%])(.*)$")


def to_python(source: str) -> str:
    """Rewrite IPython syntax into Python that keeps its meaning for the analysis: a line magic
    ``%name args`` becomes ``__nd_magic__('name', 'args')``, a shell line a ``__nd_magic__('!', ...)``,
    ``%time stmt`` becomes ``stmt``; a cell magic becomes one call, or its body when the body is code."""
    stripped = source.lstrip("\n")
    if stripped.startswith("%%"):
        header, _, body = stripped.partition("\n")
        name, _, args = header[2:].partition(" ")
        if name in _CODE_CELL_MAGICS:
            target = (
                args.split()[0] if name == "capture" and args.split() and not args.split()[0].startswith("-") else None
            )
            code = to_python(body)
            if target:
                code += f"\n{target} = {MAGIC_CALL}('capture-output', '')"
            return code
        return f"{MAGIC_CALL}({name!r}, {args!r}, {body!r})"
    lines = []
    for line, starts_statement in _logical_lines(source):
        text = line.lstrip()
        indent = line[: len(line) - len(text)]
        assigned = _ASSIGNED_MAGIC.match(line)
        if not starts_statement:  # inside brackets or a string: ``% x`` there is Python's operator
            lines.append(line)
        elif text.startswith(("%", "!")) and not text.startswith("%%"):
            lines.append(indent + _line_magic(text))
        elif assigned and not text.startswith(("#",)) and _is_magic_assignment(line):
            lines.append(
                f"{assigned.group(1)}{assigned.group(2)} = {MAGIC_CALL}('{assigned.group(3)}', {assigned.group(4)!r})"
            )
        elif text.endswith("?") and not text.startswith("#") and re.match(r"^[\w.]+\?{1,2}$", text):
            lines.append(indent + "pass")
        else:
            lines.append(line)
    return "\n".join(lines)


def cell_nodes(sources: Iterable[str]) -> Iterator[ast.AST]:
    """Every syntax node of each cell of ``sources`` (IPython syntax read as ``to_python`` does); a
    cell that does not parse is skipped."""
    for source in sources:
        try:
            tree = ast.parse(to_python(source))
        except SyntaxError:
            continue
        yield from ast.walk(tree)


def _logical_lines(source: str) -> Iterator[tuple[str, bool]]:
    """Lines, each with whether a statement starts there (as IPython sees magics: not inside brackets,
    a string or after a backslash); a magic line continued by a trailing backslash is joined into one."""
    pending = ""
    state: tuple[int, str | None] = (0, None)  # open brackets, open triple quote
    continued = False
    for line in source.split("\n"):
        if pending:
            line = pending + " " + line.lstrip()
            pending = ""
        starts = state == (0, None) and not continued
        if starts and line.lstrip().startswith(("%", "!")) and line.endswith("\\"):
            pending = line[:-1]
            continue
        yield line, starts
        if not (starts and line.lstrip().startswith(("%", "!"))):
            state = _after(state, line)
        continued = line.endswith("\\") and state[1] is None
    if pending:
        yield pending, True


def _after(state: tuple[int, str | None], line: str) -> tuple[int, str | None]:
    """The open brackets and triple quote after ``line``, given those before it. Python's tokenizer would
    stop at the first magic, so this small scanner of quotes, comments and brackets stands in for it."""
    depth, quote = state
    i = 0
    while i < len(line):
        if quote:
            end = line.find(quote, i)
            while end > 0 and _escaped(line, end):
                end = line.find(quote, end + 1)
            if end < 0:
                return depth, quote
            i, quote = end + len(quote), None
            continue
        char = line[i]
        if char == "#":
            break
        if char in "\"'":
            if line.startswith(char * 3, i):
                quote, i = char * 3, i + 3
                continue
            end = line.find(char, i + 1)
            while end > 0 and _escaped(line, end):
                end = line.find(char, end + 1)
            if end < 0:
                break  # an unclosed one-line string: continued by a backslash, or an error
            i = end + 1
            continue
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth = max(depth - 1, 0)
        i += 1
    return depth, quote


def _escaped(line: str, index: int) -> bool:
    """Whether the character at ``index`` follows an odd number of backslashes."""
    count = 0
    while index - count - 1 >= 0 and line[index - count - 1] == "\\":
        count += 1
    return count % 2 == 1


def _is_magic_assignment(line: str) -> bool:
    try:
        ast.parse(line.strip())
        return False
    except SyntaxError:
        return True


def _line_magic(text: str) -> str:
    if text.startswith("!"):
        return f"{MAGIC_CALL}('!', {text[1:]!r})"
    name, _, args = text[1:].partition(" ")
    if name in ("time", "timeit", "prun") and args.strip():
        code = args.strip()
        while code.startswith("-"):  # %timeit -n 3 -r 1 stmt
            option, _, code = code.partition(" ")
            if option in ("-n", "-r", "-p"):
                _, _, code = code.partition(" ")
        return code
    return f"{MAGIC_CALL}({name!r}, {args!r})"


# -- the analysis ---------------------------------------------------------------------------------------
@dataclass
class _Function:
    """What a notebook function or class does when called: free globals read, globals written or
    mutated, parameters mutated, notebook functions called, files read and written."""

    name: str
    params: list[str]
    free: set[str]
    writes: set[str]
    mutates: set[str]
    mutated_params: set[int]
    calls: set[str]
    files: set[str]
    is_class: bool = False
    serving_free: set[str] = field(default_factory=set)  # globals read by what can run when serving


class _Analysis:
    def __init__(self, rules: SliceRules, workdir: str | None = None) -> None:
        self.rules = rules
        self.workdir = workdir
        self.segments: dict[int, str] = {}  # statement -> its source, for import statements (trimmed cells)
        self.read_anywhere: set[str] | None = None  # every symbol some statement reads (computed once)
        self.cell_warnings: dict[int, list[str]] = {}  # cell -> warnings that matter if it is kept
        self.observed_seeds: set[str] = set()  # libraries an observed execution seeded
        self.statements: list[Statement] = []
        self.cells_of: dict[int, list[int]] = {}
        self.functions: dict[str, _Function] = {}  # name -> summary, for the definition in force
        self.groups: dict[str, set[str]] = {}  # alias and view groups (shared set objects)
        self.holds: dict[str, set[str]] = {}  # name -> notebook functions/classes its value holds
        self.origin: dict[str, set[str]] = {}  # name -> packages its value came from
        self.imported: set[str] = set()  # names currently bound by import statements
        self.cwd = ""
        self.files: dict[str, str] = {}  # path -> content written by %%writefile
        self.written: set[str] = set()  # every path some execution writes
        self.seeded: set[str] = set()
        self.files_read: list[str] = []
        self.environment_actions: list[str] = []
        self.warnings: list[str] = []

    # -- building ---------------------------------------------------------------------------------
    def add_cell(self, index: int, source: str, observation: Observation | None = None) -> None:
        self.cells_of[index] = []
        self.current = index
        reads_before = len(self.files_read)
        try:
            python = to_python(source)
            tree = ast.parse(python)
        except SyntaxError as error:
            self.warnings.append(f"execution {index} is not valid Python ({error.msg}); it is left out")
            return
        for node in tree.body:
            statement = Statement(cell=index, import_only=isinstance(node, (ast.Import, ast.ImportFrom)))
            self._statement(node, statement)
            if statement.import_only and not statement.unknown_star:
                self.segments[len(self.statements)] = ast.get_source_segment(python, node) or ""
            self.cells_of[index].append(len(self.statements))
            self.statements.append(statement)
        if tree.body and isinstance(tree.body[-1], ast.Expr) and not source.rstrip().endswith(";"):
            last = tree.body[-1].value
            if not (isinstance(last, ast.Call) and _callee(last) in ("print", "display", MAGIC_CALL)):
                self.statements[-1].strong.add("_")
        if observation is not None and tree.body:
            self._observed(index, observation, self.files_read[reads_before:])

    def _observed(self, index: int, seen: Observation, static_reads: list[str]) -> None:
        """Replace what the text guessed about execution ``index`` by what the recorder saw it do. A file
        the text names but the recorder did not see opened stays only if it exists (a reader that opens
        files outside Python, such as pyarrow's, is not seen)."""
        statements = [self.statements[i] for i in self.cells_of[index]]
        first, last = statements[0], statements[-1]
        unseen = [p for p in static_reads if not os.path.isfile(os.path.join(self.workdir or ".", p))]
        self.files_read = [p for p in self.files_read if p not in unseen]
        for statement in statements:
            statement.uses -= {f"@file:{p}" for p in unseen}
            statement.weak -= statement.guessed & seen.unchanged  # a guessed change that did not happen
            for symbols in (statement.uses, statement.weak, statement.strong):
                symbols.difference_update([s for s in symbols if s.startswith("@rng:")])
        for name in seen.changed:  # changed in place, whatever name the code used for it
            self._update(name, last)
            last.uses.add(name)
        for read in seen.reads:
            path = self._observed_path(read.given, read.resolved)
            first.uses.add(f"@file:{path}")
            if not os.path.isabs(read.given):
                first.uses.add("@cwd")
            if path not in self.files_read:
                self.files_read.append(path)
        for written in seen.writes:
            path = self._observed_path(written, written)
            last.weak.add(f"@file:{path}")
            self.written.add(path)
        if seen.cwd_after and seen.cwd_after != seen.cwd_before:
            last.strong.add("@cwd")
            last.uses.add("@cwd")
            self.cwd = self._observed_path(".", seen.cwd_after)  # where later relative paths start
        warnings = self.cell_warnings.setdefault(index, [])
        warnings[:] = [w for w in warnings if not w.startswith("unseeded randomness")]
        for library in sorted(seen.seeded):
            last.strong.add(f"@rng:{library}")
            self.observed_seeds.add(library)
        for library in sorted(seen.rng_drawn - seen.seeded):
            if library in self.observed_seeds or library in self.seeded:
                first.uses.add(f"@rng:{library}")
                first.weak.add(f"@rng:{library}")
            else:
                fitted = seen.unseeded_estimators if library == "numpy" else []
                warnings.append(
                    f"unseeded randomness: it drew from the global random state of {library} with no seed set before"
                    + (f" (it fitted {', '.join(fitted)} with random_state=None)" if fitted else "")
                    + ": replays may differ"
                )

    def _observed_path(self, given: str, resolved: str) -> str:
        """A path the recorder saw, as the slicer names files: relative to where the session started,
        unless the code gave it absolute and it lies far from there. An absolute path near the session's
        folder is usually computed from it (``Path().absolute().parents[1] / "data"``, ``os.getcwd()``), so
        it is kept relative: the replay, laid out the same way, then reaches its copy."""
        if self.workdir is None:
            return posixpath.normpath(resolved)
        relative = posixpath.normpath(os.path.relpath(resolved, self.workdir))
        parts = relative.split("/")
        ups = next((i for i, part in enumerate(parts) if part != ".."), len(parts))
        if os.path.isabs(given) and (ups > _NEAR_LEVELS or ups == len(self.workdir.strip("/").split("/"))):
            return posixpath.normpath(resolved)
        return relative

    def _statement(self, node: ast.stmt, s: Statement) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            self._definition(node, s)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            self._import(node, s)
        elif isinstance(node, (ast.If, ast.For, ast.AsyncFor, ast.While, ast.Try, ast.With, ast.AsyncWith)) or (
            hasattr(ast, "Match") and isinstance(node, ast.Match)
        ):
            self._compound(node, s)
        else:
            self._simple(node, s)

    def _simple(self, node: ast.stmt, s: Statement, may: bool = False) -> None:
        """Assignments, expressions, del, augmented assignments; ``may`` makes bindings weak."""
        self._reads(node, s)
        self._effects(node, s)
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            value = node.value
            for target in targets:
                self._bind_target(target, value, s, may)
        elif isinstance(node, ast.AugAssign):
            root = _root(node.target)
            if root:
                s.uses.add(root)
                self._update(root, s)
        elif isinstance(node, ast.Delete):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    s.kills.add(target.id)
                    self._forget(target.id)
                elif owner := _root(target):
                    self._update(owner, s)
        for walrus in _walk_scope(node):
            if isinstance(walrus, ast.NamedExpr) and isinstance(walrus.target, ast.Name):
                (s.weak if may else s.strong).add(walrus.target.id)

    def _compound(self, node: ast.stmt, s: Statement) -> None:
        """Control flow is one unit: its header is read, its body's bindings are may-bindings (weak),
        except a ``with`` body, which always runs, and a ``for`` target, which is bound."""
        always = isinstance(node, (ast.With, ast.AsyncWith))
        headers: list[ast.AST] = []
        bodies: list[ast.stmt] = []
        if isinstance(node, (ast.For, ast.AsyncFor)):
            headers.append(node.iter)
            for name in _names_bound(node.target):
                s.weak.add(name)
                self._forget(name)
            if isinstance(node.target, ast.Name) and isinstance(node.iter, (ast.Tuple, ast.List)):
                members = {e.id for e in node.iter.elts if isinstance(e, ast.Name) and e.id not in self.imported}
                if members:  # `for set_ in (train, test)`: a change of set_ is one of each of them;
                    # train and test stay apart (one-way: only the loop variable's group holds them)
                    self.groups[node.target.id] = {node.target.id}.union(*(self._group(m) for m in members))
            bodies = node.body + node.orelse
        elif isinstance(node, (ast.If, ast.While)):
            headers.append(node.test)
            bodies = node.body + node.orelse
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                headers.append(item.context_expr)
                if item.optional_vars is not None:
                    self._bind_target(item.optional_vars, item.context_expr, s, False)
            bodies = node.body
        elif isinstance(node, ast.Try):
            bodies = node.body + [n for h in node.handlers for n in h.body] + node.orelse + node.finalbody
            for handler in node.handlers:
                if handler.type is not None:
                    headers.append(handler.type)
        elif isinstance(node, ast.Match):
            headers.append(node.subject)
            bodies = [n for case in node.cases for n in case.body]
        for header in headers:
            self._reads(header, s)
            self._effects(header, s)
        for child in bodies:
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self._definition(child, s)
            elif isinstance(child, (ast.Import, ast.ImportFrom)):
                self._import(child, s)
            elif isinstance(
                child, (ast.If, ast.For, ast.AsyncFor, ast.While, ast.Try, ast.With, ast.AsyncWith, ast.Match)
            ):
                self._compound(child, s)
            else:
                self._simple(child, s, may=not always)
        if not always:  # nothing in a branch or loop body is sure to run
            s.weak |= s.strong
            s.strong.clear()

    def _definition(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef, s: Statement) -> None:
        for decorator in node.decorator_list:
            self._reads(decorator, s)
        if isinstance(node, ast.ClassDef):
            for base in [*node.bases, *(k.value for k in node.keywords)]:
                self._reads(base, s)
            summary = _summarise_class(node, self.rules)
            for child in node.body:  # the class body runs now; method bodies run when called
                if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    s.uses |= _free_names(child, set()) - _BUILTINS
        else:
            for default in [*node.args.defaults, *(d for d in node.args.kw_defaults if d is not None)]:
                self._reads(default, s)
            summary = _summarise_function(node, self.rules)
        s.strong.add(node.name)
        self._forget(node.name)
        self.functions[node.name] = summary

    def _import(self, node: ast.Import | ast.ImportFrom, s: Statement) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                bound = alias.asname or alias.name.partition(".")[0]
                self._bind_import(bound, alias.name, s)
            return
        module = ("." * node.level) + (node.module or "")
        for alias in node.names:
            if alias.name == "*":
                content = self._module_content(module)
                if content is None:
                    s.unknown_star = True
                else:
                    for name in _top_level_names(content):
                        self._bind_import(name, module, s)
                continue
            self._bind_import(alias.asname or alias.name, module, s)

    def _bind_import(self, bound: str, module: str, s: Statement) -> None:
        s.strong.add(bound)
        self._forget(bound)
        self.imported.add(bound)
        package = module.lstrip(".").partition(".")[0]
        self.origin[bound] = {package}
        path = self._local_module_path(module)
        if path is not None:  # a module written by %%writefile in this session
            s.uses |= {f"@file:{path}", "@cwd"}

    def _module_content(self, module: str) -> str | None:
        path = self._local_module_path(module)
        return self.files.get(path) if path else None

    def _local_module_path(self, module: str) -> str | None:
        relative = module.lstrip(".").replace(".", "/")
        for candidate in (relative + ".py", relative + "/__init__.py"):
            path = self._resolve(candidate)
            if path in self.files:
                return path
        return None

    # -- bindings and groups ------------------------------------------------------------------------
    def _bind_target(self, target: ast.expr, value: ast.expr | None, s: Statement, may: bool) -> None:
        if isinstance(target, ast.Name):
            name = target.id
            (s.weak if may else s.strong).add(name)
            self._forget(name)
            self.origin[name] = self._origin_of(value) if value is not None else set()
            if value is not None:
                self._join_views(name, value)
                held = self._held_by(value)
                if held:
                    self.holds[name] = held
        elif isinstance(target, (ast.Tuple, ast.List)):
            for element in target.elts:
                self._bind_target(element.value if isinstance(element, ast.Starred) else element, None, s, may)
        else:  # a.b = v, a[i] = v: an update of a
            root = _root(target)
            if root:
                s.uses.add(root)
                self._update(root, s)
                if value is not None:
                    self._join_members(root, value)

    def _forget(self, name: str) -> None:
        """``name`` is rebound: it leaves its group and holds nothing any more."""
        group = self.groups.pop(name, None)
        if group is not None:
            group.discard(name)
        self.holds.pop(name, None)
        self.functions.pop(name, None)
        self.imported.discard(name)

    def _join_views(self, name: str, value: ast.expr) -> None:
        members: set[str] = set()
        if isinstance(value, ast.Name):
            members.add(value.id)
        elif _is_view(value):
            members.add(_root(value))  # type: ignore[arg-type]
        elif isinstance(value, (ast.List, ast.Tuple, ast.Set, ast.Dict)) or (
            isinstance(value, ast.Call) and _callee(value) in self.rules.composites
        ):
            members |= {
                n.id
                for n in _walk_scope(value)
                if isinstance(n, ast.Name) and n.id not in self.imported and n.id not in self.functions
            }
        members.discard(name)
        if members:
            self._merge(name, members)

    def _join_members(self, root: str, value: ast.expr) -> None:
        if isinstance(value, ast.Name) and value.id not in self.imported:
            self._merge(root, {value.id})

    def _merge(self, name: str, members: set[str]) -> None:
        group = self.groups.get(name) or {name}
        for member in members:
            group |= self.groups.get(member, {member})
        for member in group:
            self.groups[member] = group

    def _group(self, name: str) -> set[str]:
        return self.groups.get(name, {name})

    def _update(self, root: str, s: Statement, guessed: bool = False) -> None:
        """An in-place change of ``root``: an update of every name that shares its object. ``guessed``:
        inferred from a call, which an observation of the execution may contradict."""
        for member in self._group(root):
            s.weak.add(member)
            if guessed:
                s.guessed.add(member)

    def _held_by(self, value: ast.expr) -> set[str]:
        """Notebook code the value of ``value`` keeps: functions passed uncalled, instances of classes."""
        held: set[str] = set()
        called = {id(n.func) for n in _walk_scope(value) if isinstance(n, ast.Call)}
        for node in _walk_scope(value):
            if isinstance(node, ast.Name) and node.id in self.functions:
                if id(node) not in called or self.functions[node.id].is_class:
                    held.add(node.id)
            elif isinstance(node, ast.Name) and node.id in self.holds:
                held |= self.holds[node.id]
            elif isinstance(node, ast.Lambda):
                held.add(self._lambda(node))
        return held

    def _lambda(self, node: ast.Lambda) -> str:
        name = f"<lambda:{id(node)}>"
        params = [a.arg for a in node.args.args]
        free = _free_names(node.body, set(params)) - _BUILTINS
        self.functions[name] = _Function(name, params, free, set(), set(), set(), set(), set())
        return name

    def _origin_of(self, value: ast.expr) -> set[str]:
        packages: set[str] = set()
        for node in _walk_scope(value):
            if isinstance(node, ast.Name):
                packages |= self.origin.get(node.id, set())
        return packages

    # -- reads and effects ----------------------------------------------------------------------------
    def _reads(self, node: ast.AST, s: Statement) -> None:
        names = _free_names(node, set()) - _BUILTINS
        s.uses |= names
        for name in names:
            for held in self._held_code(name):
                s.uses |= self._globals_of(held)
            for package in self.origin.get(name, ()):
                s.uses.add(f"@state:{package}")

    def _held_code(self, name: str) -> set[str]:
        held: set[str] = set()
        for member in self._group(name):
            held |= self.holds.get(member, set())
        return held

    def _globals_of(self, function: str, seen: set[str] | None = None, serving: bool = False) -> set[str]:
        """The globals a notebook function or class reads when called, through the notebook functions
        it calls, as they are defined now; with ``serving``, only what can run when the model serves
        (a class's ``fit`` and ``__init__`` do not)."""
        seen = seen if seen is not None else set()
        if function in seen or function not in self.functions:
            return set()
        seen.add(function)
        summary = self.functions[function]
        names = set(summary.serving_free if serving else summary.free) | {function}
        for callee in summary.calls & (summary.serving_free if serving else summary.calls):
            names |= self._globals_of(callee, seen, serving)
        for path in summary.files:
            names.add(f"@file:{path}")
        return names

    def _effects(self, node: ast.AST, s: Statement) -> None:
        for call in (n for n in _walk_scope(node) if isinstance(n, ast.Call)):
            self._call(call, s)

    def _call(self, call: ast.Call, s: Statement) -> None:
        callee = _callee(call)
        if callee == MAGIC_CALL:
            self._magic(call, s)
            return
        func = call.func
        if isinstance(func, ast.Name) and func.id in self.functions:
            self._notebook_call(func.id, call, s)
        if isinstance(func, ast.Attribute):
            root = _root(func.value) if _is_chain(func.value) else None
            if root is not None and root not in self.imported and self._mutates(func.attr, call):
                # only an unknown method is a guess an observation may overrule: a sampled digest could
                # miss what a known mutator (fit, inplace=True) changed
                self._update(root, s, guessed=func.attr not in self.rules.mutating and not _inplace(call))
                for held in self._held_code(root):
                    s.uses |= self._globals_of(held)
        if callee in self.rules.mutating_functions and call.args:
            root = _root(call.args[0])
            if root and root not in self.imported:
                self._update(root, s)
        package = self._package_of_callee(func)
        if callee in _CONFIG_CALLS.split() and package:
            s.weak.add(f"@state:{package}")
        self._randomness(call, callee, package, s)
        self._files(call, callee, s)

    def _notebook_call(self, name: str, call: ast.Call, s: Statement) -> None:
        summary = self.functions[name]
        s.uses |= self._globals_of(name)
        for written in summary.writes | (summary.mutates - self.imported):  # np.asarray(...) changes no np
            s.uses.add(written)
            self._update(written, s)
        for index in summary.mutated_params:
            if index < len(call.args) and _root(call.args[index]):
                self._update(_root(call.args[index]), s, guessed=True)  # type: ignore[arg-type]
        for path in summary.files:
            s.uses.add(f"@file:{path}")

    def _mutates(self, method: str, call: ast.Call) -> bool:
        if _inplace(call):
            return True
        if method in self.rules.pure:
            return False
        if method in _READERS or method in _WRITERS:
            return False
        return True

    def _package_of_callee(self, func: ast.expr) -> str | None:
        root = _root(func) if _is_chain(func) else None
        packages = self.origin.get(root, set()) if root else set()
        return sorted(packages)[0] if len(packages) == 1 else None

    def _randomness(self, call: ast.Call, callee: str | None, package: str | None, s: Statement) -> None:
        if callee is None or package is None:
            return
        library = {"np": "numpy", "sklearn": "numpy", "tf": "tensorflow"}.get(package, package)
        if library in _RNG_SEEDS and callee in _RNG_SEEDS[library]:
            s.strong.add(f"@rng:{library}")
            self.seeded.add(library)
            return
        draws = (
            (package == "numpy" and _attribute_path(call.func)[-2:-1] == ["random"] and callee not in _RNG_NOT_DRAWS)
            or (package == "random" and callee not in _RNG_NOT_DRAWS and callee != "seed")
            or (
                package == "torch"
                and callee in {"rand", "randn", "randint", "randperm", "normal", "bernoulli", "multinomial"}
            )
            or (
                package == "sklearn"
                and callee in _SKLEARN_RANDOM.split()
                and not any(k.arg == "random_state" for k in call.keywords)
            )
        )
        if not draws:
            return
        if library not in self.seeded:
            self.cell_warnings.setdefault(self.current, []).append(
                f"unseeded randomness from {library} ({callee}): replays may differ"
            )
            return
        s.uses.add(f"@rng:{library}")
        s.weak.add(f"@rng:{library}")

    def _files(self, call: ast.Call, callee: str | None, s: Statement) -> None:
        if callee == "open":
            path = _constant_arg(call, 0, "file")
            mode = _constant_arg(call, 1, "mode") or "r"
            if path is not None:
                self._file_access(
                    path,
                    reads="r" in mode or "+" in mode,
                    writes=any(c in mode for c in "wxa"),
                    append="a" in mode,
                    s=s,
                )
            return
        if callee in _WRITERS:
            path = _constant_arg(call, _WRITERS[callee], "path")
            if path is None and isinstance(call.func, ast.Attribute):
                path = _path_of(call.func.value)
            if path is not None:
                self._file_access(path, reads=False, writes=True, append=False, s=s)
        elif callee in _READERS:
            path = _constant_arg(call, _READERS[callee], "filepath_or_buffer") or _constant_arg(call, 0, "path")
            if path is None and isinstance(call.func, ast.Attribute):
                path = _path_of(call.func.value)
            if path is not None:
                self._file_access(path, reads=True, writes=False, append=False, s=s)

    def _file_access(self, path: str, reads: bool, writes: bool, append: bool, s: Statement) -> None:
        resolved = self._resolve(path)
        symbol = f"@file:{resolved}"
        if not path.startswith("/"):
            s.uses.add("@cwd")
        if reads:
            s.uses.add(symbol)
            if resolved not in self.files_read:
                self.files_read.append(resolved)
        if writes:
            (s.weak if append or reads else s.strong).add(symbol)
            self.written.add(resolved)

    def _resolve(self, path: str) -> str:
        return (
            posixpath.normpath(posixpath.join(self.cwd, path)) if not path.startswith("/") else posixpath.normpath(path)
        )

    def _magic(self, call: ast.Call, s: Statement) -> None:
        # the arguments are the string literals that _line_magic and the cell rewriting write
        args = [a.value for a in call.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        name, line = (args + ["", ""])[:2]
        body = args[2] if len(args) > 2 else None
        if name == "!":
            text = line.strip()
            self.environment_actions.append("!" + text) if re.match(
                r"^(pip|conda|mamba|uv|apt(-get)?)\b", text
            ) else self.warnings.append(f"shell command left out of the recipe: !{text}")
        elif name in _ENVIRONMENT_MAGICS:
            self.environment_actions.append(f"%{name} {line}".strip())
        elif name == "cd":
            target = shlex.split(line)[0] if line.strip() else "~"
            s.strong.add("@cwd")
            s.uses.add("@cwd")
            self.cwd = self._resolve(target) if not target.startswith(("~", "-")) else target
        elif name == "writefile":
            options = shlex.split(line)
            path = self._resolve(options[-1]) if options else ""
            append = "-a" in options or "--append" in options
            (s.weak if append else s.strong).add(f"@file:{path}")
            s.uses.add("@cwd")
            self.files[path] = (self.files.get(path, "") if append else "") + (body or "")
        elif name == "run":
            options = shlex.split(line)
            script = next((o for o in options if not o.startswith("-")), None)
            if script is None:
                return
            path = self._resolve(script)
            s.uses |= {f"@file:{path}", "@cwd"}
            content = self.files.get(path)
            if content is None:
                s.unknown_star = True
                self.warnings.append(f"%run {script}: the file was not written in this session; its names are unknown")
            else:
                for defined in _top_level_names(content):
                    s.strong.add(defined)
                    self._forget(defined)
                if "-i" in options:
                    s.uses |= _free_names(ast.parse(content), set()) - _BUILTINS
        elif name == "store" and "-r" in line:
            for stored in [w for w in line.split() if not w.startswith("-")]:
                s.strong.add(stored)
                self.warnings.append(f"%store -r {stored}: its value comes from outside the notebook")
        elif name not in _IGNORED_MAGICS and name not in _CODE_CELL_MAGICS and name != "capture-output":
            self.warnings.append(f"magic %{name} left out of the recipe")

    # -- slicing ----------------------------------------------------------------------------------------
    def slice(self, target: str) -> Slice:
        if not any(target in (st.strong | st.weak) for st in self.statements):
            raise ValueError(f"{target!r} is never assigned in this history, so there is nothing to slice")
        kept = _Kept()
        visited: set[tuple[str, int]] = set()
        work: list[tuple[str, int]] = [(target, len(self.statements))]
        held_code = self._held_code(target) | ({target} if target in self.functions else set())
        for held in held_code:  # code the target is or holds is pickled with today's globals
            work += [(name, len(self.statements)) for name in self._globals_of(held, serving=True)]
        while work:
            symbol, position = work.pop()
            if (symbol, position) in visited:
                continue
            visited.add((symbol, position))
            found = False
            for index in range(position - 1, -1, -1):
                statement = self.statements[index]
                if symbol in statement.kills:
                    found = True
                    break
                if symbol in statement.strong:
                    work += self._include(index, kept, _reason(symbol, statement, strong=True))
                    found = True
                    break
                if symbol in statement.weak:
                    work += self._include(index, kept, _reason(symbol, statement, strong=False))
            if not found and not symbol.startswith("@") and symbol not in _BUILTINS:
                for index in range(position - 1, -1, -1):
                    if self.statements[index].unknown_star:
                        work += self._include(
                            index, kept, f"may define {symbol} (an import of unknown names)", whole=True
                        )
        cells = sorted(kept.reasons)
        kept_files = {
            use[6:]
            for c in cells
            for i in self._kept_statements(c, kept)
            for use in self.statements[i].uses
            if use.startswith("@file:")
        }
        files_read = [f for f in self.files_read if f in kept_files and f not in self.written | set(self.files)]
        for cell in cells:
            uses = {u for i in self._kept_statements(cell, kept) for u in self.statements[i].uses}
            kept.reasons[cell] += [f"reads file {f}" for f in files_read if f"@file:{f}" in uses]
        trimmed = {c: self._kept_statements(c, kept) for c in cells if c not in kept.whole}
        return Slice(
            target=target,
            cells=cells,
            files_read=files_read,
            environment_actions=list(self.environment_actions),
            warnings=list(dict.fromkeys(self.warnings)),
            cell_warnings={
                c: list(dict.fromkeys(self.cell_warnings[c]))
                for c in cells
                if self.cell_warnings.get(c) and c not in trimmed
            },
            reasons={c: list(dict.fromkeys(r)) for c, r in kept.reasons.items()},
            only_statements={c: [self.cells_of[c].index(i) for i in s] for c, s in trimmed.items()},
            sources={c: "\n".join(self.segments[i] for i in s) for c, s in trimmed.items()},
        )

    def _include(self, index: int, kept: _Kept, reason: str, whole: bool = False) -> list[tuple[str, int]]:
        """Keep the statement at ``index``: an import alone (its cell may be trimmed to its needed
        imports), anything else with its whole cell; return the symbols to search for next."""
        statement = self.statements[index]
        cell = statement.cell
        kept.reasons.setdefault(cell, []).append(reason)
        if cell in kept.whole:
            return []
        if statement.import_only and not whole and index in self.segments:
            if index in kept.imports.setdefault(cell, set()):
                return []
            kept.imports[cell].add(index)
            return [(use, index) for use in statement.uses]
        kept.whole.add(cell)
        return [(use, i) for i in self.cells_of[cell] for use in self.statements[i].uses]

    def _kept_statements(self, cell: int, kept: _Kept) -> list[int]:
        """The statements of a kept cell that are replayed: all, or its needed imports and those that
        bind names nothing reads from a package it needs (imports for their side effects, such as
        ``from sklearn.experimental import enable_iterative_imputer``)."""
        if cell in kept.whole:
            return self.cells_of[cell]
        if self.read_anywhere is None:
            self.read_anywhere = {u for st in self.statements for u in st.uses}
        needed = kept.imports.get(cell, set())
        packages = {_import_package(self.segments[i]) for i in needed}
        return [
            i
            for i in self.cells_of[cell]
            if i in needed
            or (
                i in self.segments
                and not self.statements[i].strong & self.read_anywhere
                and _import_package(self.segments[i]) in packages
            )
        ]


@dataclass
class _Kept:
    """What the backward slice keeps: cells kept whole, the import statements of the others, and why."""

    whole: set[int] = field(default_factory=set)
    imports: dict[int, set[int]] = field(default_factory=dict)
    reasons: dict[int, list[str]] = field(default_factory=dict)


def _import_package(source: str) -> str:
    """The top-level package of one import statement's source."""
    node = ast.parse(source).body[0]
    module = (node.module or "") if isinstance(node, ast.ImportFrom) else node.names[0].name  # type: ignore[attr-defined]
    return module.partition(".")[0]


def _reason(symbol: str, statement: Statement, strong: bool) -> str:
    """Why a statement that binds (``strong``) or updates ``symbol`` is kept, in words."""
    kind, _, detail = symbol.partition(":")
    if kind == "@file":
        return f"writes file {detail}"
    if kind == "@cwd":
        return "changes the working directory"
    if kind == "@rng":
        return f"seeds the {detail} random state" if strong else f"draws from the seeded {detail} random state"
    if kind == "@state":
        return f"configures library {detail}"
    if statement.import_only and strong:
        return f"imports {symbol}"
    return f"defines {symbol}" if strong else f"changes {symbol}"


# -- AST helpers ----------------------------------------------------------------------------------------
def _walk_scope(node: ast.AST) -> Iterator[ast.AST]:
    """``ast.walk`` that does not enter nested function, lambda or class bodies."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        for child in ast.iter_child_nodes(current):
            if (
                isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))
                and child is not node
            ):
                if isinstance(child, ast.Lambda):
                    yield child
                continue
            stack.append(child)


def _free_names(node: ast.AST, bound: set[str]) -> set[str]:
    """Names read in ``node`` that are not bound inside it (comprehension and lambda scopes honoured)."""
    free: set[str] = set()

    def visit(n: ast.AST, local: set[str]) -> None:
        if isinstance(n, ast.Name):
            if isinstance(n.ctx, ast.Load) and n.id not in local:
                free.add(n.id)
            return
        if isinstance(n, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            inner = set(local)
            for generator in n.generators:
                visit(generator.iter, inner)
                inner |= set(_names_bound(generator.target))
                for condition in generator.ifs:
                    visit(condition, inner)
            for part in [n.key, n.value] if isinstance(n, ast.DictComp) else [n.elt]:
                visit(part, inner)
            return
        if isinstance(n, ast.Lambda):
            visit(n.args, local)
            visit(
                n.body,
                local
                | {a.arg for a in [*n.args.posonlyargs, *n.args.args, *n.args.kwonlyargs]}
                | ({n.args.vararg.arg} if n.args.vararg else set())
                | ({n.args.kwarg.arg} if n.args.kwarg else set()),
            )
            return
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            summary_free = _function_free(n)
            free.update(summary_free - local)
            return
        for child in ast.iter_child_nodes(n):
            visit(child, local)

    visit(node, set(bound))
    return free


def _function_free(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> set[str]:
    """The globals a function body reads (names it loads and does not bind locally)."""
    args = node.args
    params = {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]}
    params |= {args.vararg.arg} if args.vararg else set()
    params |= {args.kwarg.arg} if args.kwarg else set()
    body = node.body if isinstance(node.body, list) else [node.body]
    declared_global = {name for n in body for sub in ast.walk(n) if isinstance(sub, ast.Global) for name in sub.names}
    local = params | (_locally_bound(body) - declared_global)
    free: set[str] = set()
    for statement in body:
        free |= _free_names(statement, local)
    return free - _BUILTINS


def _locally_bound(body: Sequence[ast.AST]) -> set[str]:
    bound: set[str] = set()
    for statement in body:
        for n in _walk_scope(statement):
            if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
                bound.add(n.id)
            elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                bound.add(n.name)
            elif isinstance(n, (ast.Import, ast.ImportFrom)):
                bound |= {a.asname or a.name.partition(".")[0] for a in n.names if a.name != "*"}
            elif isinstance(n, ast.ExceptHandler) and n.name:
                bound.add(n.name)
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(statement.name)
    return bound


def _summarise_function(node: ast.FunctionDef | ast.AsyncFunctionDef, rules: SliceRules) -> _Function:
    args = node.args
    params = [a.arg for a in [*args.posonlyargs, *args.args]]
    free = _function_free(node)
    writes = {name for sub in ast.walk(node) if isinstance(sub, ast.Global) for name in sub.names}
    mutates: set[str] = set()
    mutated_params: set[int] = set()
    calls: set[str] = set()
    files: set[str] = set()
    for sub in ast.walk(node):
        target_root = None
        if isinstance(sub, ast.Call):
            name = _callee(sub)
            if isinstance(sub.func, ast.Name):
                calls.add(sub.func.id)
            if isinstance(sub.func, ast.Attribute) and _is_chain(sub.func.value):
                if sub.func.attr not in rules.pure and sub.func.attr not in _READERS and sub.func.attr not in _WRITERS:
                    target_root = _root(sub.func.value)
            if name in _READERS or name in _WRITERS or name == "open":
                path = _constant_arg(sub, _READERS.get(name, _WRITERS.get(name, 0)) or 0, "path")
                if path:
                    files.add(posixpath.normpath(path))
        elif isinstance(sub, (ast.Assign, ast.AugAssign)):
            for target in sub.targets if isinstance(sub, ast.Assign) else [sub.target]:
                if isinstance(target, (ast.Attribute, ast.Subscript)):
                    target_root = _root(target)
        if target_root is None:
            continue
        if target_root in params:
            mutated_params.add(params.index(target_root))
        elif target_root in free:
            mutates.add(target_root)
    return _Function(node.name, params, free, writes, mutates, mutated_params, calls & free, files, serving_free=free)


def _summarise_class(node: ast.ClassDef, rules: SliceRules) -> _Function:
    """A class as one callable: the union of what its methods do (any of them may run)."""
    summary = _Function(node.name, [], set(), set(), set(), set(), set(), set(), is_class=True)
    for child in node.body:
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            method = _summarise_function(child, rules)
            summary.free |= method.free
            if child.name not in rules.mutating and child.name != "__init__":
                summary.serving_free |= method.free
            summary.writes |= method.writes
            summary.mutates |= method.mutates
            summary.calls |= method.calls
            summary.files |= method.files
    summary.free.discard(node.name)
    summary.serving_free.discard(node.name)
    return summary


def _top_level_names(source: str) -> list[str]:
    """The public names a module defines at its top level (``__all__`` when it is a literal)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            try:
                return [str(n) for n in ast.literal_eval(node.value)]
            except ValueError:
                pass
        names += sorted(_locally_bound([node]))
    return [n for n in dict.fromkeys(names) if not n.startswith("_")]


def _names_bound(target: ast.AST) -> list[str]:
    return [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]


def _root(node: ast.AST) -> str | None:
    """The variable at the root of ``a.b[c].d`` (None when a call or literal is in the way)."""
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Starred)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _is_chain(node: ast.AST) -> bool:
    """True for ``a``, ``a.b``, ``a[i].b``: attribute and subscript access only, no calls."""
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return isinstance(node, ast.Name)


def _is_view(value: ast.expr) -> bool:
    """``pipe.named_steps["clf"]``, ``grid.best_estimator_``, ``models[0]``: the same object, not a copy.
    Column selections (``df["y"]``, ``df[cols]``) are copies in pandas and are not views here."""
    if not _is_chain(value) or isinstance(value, ast.Name):
        return False
    node = value
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        if isinstance(node, ast.Attribute):
            return True
        index = node.slice
        if not (isinstance(index, ast.Constant) and isinstance(index.value, int)) and not (
            isinstance(index, ast.UnaryOp) and isinstance(index.operand, ast.Constant)
        ):
            return False
        node = node.value
    return True


def _inplace(call: ast.Call) -> bool:
    return any(
        k.arg == "inplace" and isinstance(k.value, ast.Constant) and k.value.value is True for k in call.keywords
    )


def _callee(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _attribute_path(node: ast.AST) -> list[str]:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return parts[::-1]


def _constant_arg(call: ast.Call, index: int, keyword: str) -> str | None:
    for k in call.keywords:
        if k.arg in (keyword, "path", "fname", "file", "filepath_or_buffer", "path_or_buf", "filename"):
            return k.value.value if isinstance(k.value, ast.Constant) and isinstance(k.value.value, str) else None
    if index < len(call.args):
        arg = call.args[index]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return arg.value
        return _path_of(arg)
    return None


def _path_of(node: ast.AST) -> str | None:
    """The constant path in ``Path("x.csv")`` or ``open("x.csv")``-like wrappers, if any."""
    if isinstance(node, ast.Call) and _callee(node) in ("Path", "PurePath") and node.args:
        arg = node.args[0]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return arg.value
    return None
