"""The session recorder that ``%load_ext notebook_deploy`` starts: what each cell does, kept for the recipe.

Loaded at the start of a notebook, it observes each execution (``capturing.observation``): which
failed; every file opened (path as given, resolved, size, sha256 when read, and which package opened
it) and every URL fetched, from audit hooks (``open``, ``urllib.Request``, ``http.client.send``);
which namespace objects changed in place (fingerprints before and after); which global random
states moved and which were seeded. Loaded later, the kernel's own input history still gives the
exact executions, in order, and the static slicer alone answers for the unwatched ones.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from ..bundle import file_sha256
from ..capturing import fits
from ..capturing import observation as observing
from ..capturing.observation import FileAccess, Observation
from ..capturing.recipe import History

_HASH_LIMIT = 256 * 1024 * 1024  # larger files are hashed at capture time, not at every read
_IMPORT_MACHINERY = {"importlib", "pkgutil", "zoneinfo", "encodings", "linecache", "inspect", "traceback"}
_IGNORED_PREFIXES = tuple(
    {
        sys.prefix,
        sys.base_prefix,
        "/proc",
        "/sys",
        "/dev",
        "/etc/",
        str(Path.home() / ".ipython"),
        str(Path.home() / ".local" / "share" / "jupyter"),
    }
)


class SessionRecorder:
    """Follows a kernel's executions and keeps an ``Observation`` of each (see the module's docstring)."""

    _EVENTS = frozenset({"open", "urllib.Request", "http.client.send"})

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        # The running cell's number: its input is already in the history. (``shell.execution_count`` is
        # one more than that during a cell under ipykernel 7, and equal to it under older kernels.)
        self.first_count = len(shell.history_manager.input_hist_raw) - 1
        self.workdir = os.getcwd()
        self.failed: set[int] = set()
        self.file_hashes: dict[str, str] = {}
        self.observations: dict[int, Observation] = {}
        self._current: Observation | None = None
        self._before: dict[str, tuple[int, str | None]] | None = None  # the last execution's "after"
        self._rng_before: dict[str, str] = {}
        self._seed_originals: list[tuple[Any, str, Any]] = []
        self._hashed: dict[tuple[str, float, int], str] = {}  # (path, mtime, size) -> sha256
        self._busy = False
        self._modules_before: list[str] = []
        shell.events.register("pre_run_cell", self._pre_run_cell)
        shell.events.register("post_run_cell", self._post_run_cell)
        sys.addaudithook(self._audit)  # cannot be removed: it does nothing outside a cell

    def _pre_run_cell(self, info: Any) -> None:
        self._busy = True
        try:
            if self._before is None:  # else nothing ran since the last execution's snapshot
                self._before = observing.snapshot(self.shell.user_ns)
            self._rng_before = observing.rng_states()
        finally:
            self._busy = False
        self._current = Observation(cwd_before=os.getcwd())
        self._modules_before = list(sys.modules)
        self._watch_seeds()

    def _post_run_cell(self, result: Any) -> None:
        observed, self._current = self._current, None
        self._unwatch_seeds()
        if not result.success and result.execution_count is not None:
            self.failed.add(result.execution_count)
        if observed is None or result.execution_count is None:
            return
        self.observations[result.execution_count] = observed
        self._busy = True
        try:
            namespace = self.shell.user_ns
            after = observing.snapshot(namespace)
            before, self._before = self._before or {}, after
            observed.changed, observed.unchanged = observing.changes(before, after)
            rebound = {n for n, (identity, _) in after.items() if before.get(n, (None,))[0] != identity}
            observed.unseeded_estimators = observing.unseeded_estimators(namespace, observed.changed | rebound)
            rng = observing.rng_states()
            observed.rng_drawn = {lib for lib, state in rng.items() if self._rng_before.get(lib, state) != state}
            observed.cwd_after = os.getcwd()
            observed.modules = observing.first_loaded(self._modules_before) | observing.value_modules(
                namespace, observed.changed | rebound
            )
        finally:
            self._busy = False

    def _watch_seeds(self) -> None:
        """Wrap the seeding functions of the imported random libraries while a cell runs, to see a seed set."""
        for library, (module_name, names) in observing.SEED_FUNCTIONS.items():
            module = sys.modules.get(module_name)
            for name in names if module is not None else ():
                original = getattr(module, name, None)
                if callable(original):
                    setattr(module, name, self._seed_wrapper(library, original))
                    self._seed_originals.append((module, name, original))

    def _unwatch_seeds(self) -> None:
        for module, name, original in self._seed_originals:
            setattr(module, name, original)
        self._seed_originals.clear()

    def _seed_wrapper(self, library: str, original: Any) -> Any:
        def seed(*args: Any, **kwargs: Any) -> Any:
            if self._current is not None:
                self._current.seeded.add(library)
            return original(*args, **kwargs)

        seed.__wrapped__ = original  # type: ignore[attr-defined]
        return seed

    def _audit(self, event: str, args: tuple[Any, ...]) -> None:
        if event not in self._EVENTS or self._current is None or self._busy:
            return
        self._busy = True
        try:
            if event == "open":
                self._opened(args[0], args[1])
            elif event == "urllib.Request":
                self._fetched(str(args[0]))
            else:
                self._sent(args[0], args[1])
        except Exception:  # noqa: BLE001 - observing must never break the user's cell
            pass
        finally:
            self._busy = False

    def _opened(self, path: Any, mode: Any) -> None:
        if not isinstance(mode, str) or self._current is None:
            return
        paths = observing.resolve(path, os.getcwd())
        if paths is None:
            return
        given, absolute = paths
        if absolute.startswith(_IGNORED_PREFIXES) or absolute.endswith((".py", ".pyc", ".so")):
            return
        if any(c in mode for c in "wxa+"):
            self._current.writes.append(absolute)
            return
        if not os.path.isfile(absolute):
            return
        stat = os.stat(absolute)
        sha = None
        if stat.st_size <= _HASH_LIMIT:
            key = (absolute, stat.st_mtime, stat.st_size)
            sha = self._hashed.get(key) or self._hashed.setdefault(key, file_sha256(absolute))
            self.file_hashes.setdefault(absolute, sha)
        opener = observing.opener(sys._getframe(2))
        if opener not in _IMPORT_MACHINERY and not any(a.resolved == absolute for a in self._current.reads):
            self._current.reads.append(FileAccess(given, absolute, opener, stat.st_size, sha))

    def _fetched(self, url: str) -> None:
        if self._current is not None and url.startswith(("http:", "https:", "ftp:")) and url not in self._current.urls:
            self._current.urls.append(url)

    def _sent(self, connection: Any, data: Any) -> None:
        """An HTTP request going out through http.client (requests and urllib3 too): its URL."""
        if not isinstance(data, (bytes, bytearray)):
            return
        method, _, rest = bytes(data[:2048]).partition(b" ")
        if not method.isalpha() or not method.isupper():
            return  # a body sent after the headers
        target = rest.partition(b" ")[0].decode("latin-1")
        if target.startswith(("http:", "https:")):  # through a proxy
            self._fetched(target)
            return
        secure = getattr(connection, "default_port", 80) == 443
        port = getattr(connection, "port", None)
        shown = "" if port in (None, 443 if secure else 80) else f":{port}"
        self._fetched(f"{'https' if secure else 'http'}://{connection.host}{shown}{target}")

    def history(self) -> History:
        """The executions of this session before the running one, with what the hooks saw."""
        current = self.shell.execution_count
        raw = self.shell.history_manager.input_hist_raw
        warnings = []
        if self.first_count > 1:
            warnings.append(
                f"notebook_deploy was loaded at execution {self.first_count}: for earlier cells, failures and "
                "data files as they were read are not known. Load it in the first cell for an exact recipe"
            )
        return History(
            sources=list(raw[1:current]),
            counts=list(range(1, current)),
            failed=set(self.failed),
            file_hashes=dict(self.file_hashes),
            workdir=self.workdir,
            source={"kind": "kernel", "notebook": os.environ.get("JPY_SESSION_NAME")},
            warnings=warnings,
            observations={c: o for c, o in self.observations.items() if c < current},
        )


_RECORDERS: dict[int, SessionRecorder] = {}


def recorder_for(shell: Any) -> SessionRecorder:
    """The shell's recorder, started now if the extension was not loaded before."""
    if id(shell) not in _RECORDERS:
        _RECORDERS[id(shell)] = SessionRecorder(shell)
        observe_fits(shell)
    return _RECORDERS[id(shell)]


def observe_fits(shell: Any) -> None:
    """Rewrite the shell's cells from now on so that each fitting call records the rows it was given
    (``notebook_deploy.capturing.fits``): the default sample is then the data the model really saw."""
    fits.LOG.execution = lambda: len(shell.history_manager.input_hist_raw) - 1  # the running cell's number
    fits.LOG.active = True
    shell.push({fits.OBSERVER: fits.observe}, interactive=False)  # hidden from %who
    shell.ast_transformers.append(fits.FitCalls())


def active_recorder(shell: Any) -> SessionRecorder | None:
    """The shell's recorder if ``%load_ext notebook_deploy`` (or ``%deploy``) started one, else None."""
    return _RECORDERS.get(id(shell))
