"""A server that follows its tag (``serve churn:prod --follow``): when the tag moves, the version it names
is loaded beside the one serving, started, and switched to once its ``/readyz`` says it reproduced its
stored sample; the replaced version answers the requests it was given, then its app is stopped. A version
that does not load (damaged, untrusted, unpicklable) or does not reproduce its sample is not switched to:
the old one serves on, and the log, the audit log (event ``follow``) and ``/metadata`` say why.

The tag is polled: a stat of the model's tags file and folder every second (``Store.stamp``), the
reference resolved again only when one changed. A stat a second costs nothing, and polling also sees a
store on a network file system or a container volume written from another host, which inotify does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .. import audit
from ..bundle import Bundle
from ..errors import BundleReferenceError, ServeError, SettingError
from ..store import Store, parse_ref
from .settings import ServeSettings

if TYPE_CHECKING:
    from .router import VersionRouter, _Version

log = logging.getLogger("notebook_deploy.serving")

POLL_SECONDS = 1.0  # how often the tag is looked at
READY_SECONDS = 300.0  # longest a new version may take to answer its stored sample before it is given up


def check_followable(stable: Sequence[Bundle], refs: Sequence[str]) -> None:
    """Refuse to follow what has no tag to follow: a folder outside a store, or a reference of another
    model than the version served for it."""
    if len(refs) != len(stable):
        raise SettingError("follow", f"give one reference to follow per model served, not {len(refs)}")
    for bundle, ref in zip(stable, refs):
        if Store.holding(bundle.path) is None or not _names(ref, bundle.name):
            raise SettingError(
                "follow", f"{ref} is a folder, not a tag of a store: follow NAME:TAG (e.g. {bundle.name}:prod)"
            )


def _names(ref: str, name: str) -> bool:
    """Whether ``ref`` is a reference to the model ``name`` (a folder of a store's version is not one)."""
    try:
        return parse_ref(ref)[0] == name
    except BundleReferenceError:
        return False


class Follower:
    """Follows the tag of one model served by a ``VersionRouter`` (see the module's docstring)."""

    def __init__(self, router: VersionRouter, bundle: Bundle, ref: str, settings: ServeSettings) -> None:
        store = Store.holding(bundle.path)
        assert store is not None  # checked by check_followable
        self.router, self.store, self.ref, self.name, self.settings = router, store, ref, bundle.name, settings
        self.refused: str | None = None  # a version that failed: tried again only once the tag has left it
        self.pin = contextlib.ExitStack()  # the store's mark that this process serves the version it switched to
        self.status: dict[str, Any] = {"ref": ref, "state": "following", "version": bundle.version}

    async def run(self) -> None:
        """Look at the tag every ``POLL_SECONDS`` until cancelled, and follow it when it moves."""
        seen = None
        try:
            while True:
                stamp = await asyncio.to_thread(self.store.stamp, self.name)
                if stamp != seen:
                    seen = stamp
                    await self.check()
                await asyncio.sleep(POLL_SECONDS)
        finally:
            self.pin.close()

    async def check(self) -> None:
        """Switch to the version the tag names now, if it is another one than served (and not one refused)."""
        try:
            _, version = await asyncio.to_thread(self.store.resolve, self.ref)
        except Exception as error:  # noqa: BLE001 - a tag removed or a store unreadable: serve on, say so
            if self.status.get("reason") != str(error):
                log.warning("following %s: %s; %s serves on", self.ref, error, self._serving().bundle.ref)
                self.status.update(state="unresolved", reason=str(error))
            return
        if version == self._serving().bundle.version:
            self.refused = None
            return
        if version != self.refused:
            self.refused = None
            await self.switch(version)

    async def switch(self, version: str) -> None:
        """Load ``version`` beside the one serving, start it, switch once it reproduced its stored sample,
        then stop the old one when its requests are answered; on any failure keep the old one."""
        old, new = self._serving(), None
        pin = contextlib.ExitStack()
        started = time.monotonic()
        try:
            bundle = await asyncio.to_thread(self.store.get, f"{self.name}:{version}")
            pin.enter_context(self.store.serving(bundle, f"(this server, following {self.ref})"))
            new = await asyncio.to_thread(self.router.build, bundle)  # unpickling is slow: the loop serves on
            await self.router.start(new)
            checked = await self.router.sample_check(new, READY_SECONDS)
            if checked != "match":
                raise ServeError(f"its stored sample check gave {checked!r}: {_MEANING.get(checked, '')}")
        except BaseException as error:
            if new is not None:
                await self.router.stop(new)
            pin.close()
            if not isinstance(error, Exception):  # cancelled: the server stops
                raise
            self.refused = version
            self._record("failed", old.bundle.ref, f"{self.name}:{version}", reason=f"{type(error).__name__}: {error}")
            log.error(
                "following %s: %s:%s was not switched to, %s serves on: %s",
                self.ref,
                self.name,
                version,
                old.bundle.ref,
                error,
            )
            return
        self.router.switch(new)
        self.pin.close()
        self.pin = pin
        self._record("switched", old.bundle.ref, new.bundle.ref, seconds=round(time.monotonic() - started, 3))
        log.info("following %s: switched from %s to %s", self.ref, old.bundle.ref, new.bundle.ref)
        await self.router.retire(old, self.settings.graceful_timeout)

    def _serving(self) -> _Version:
        return self.router.groups[self.name].stable

    def _record(self, result: str, before: str, after: str, **details: Any) -> None:
        """Say what happened in ``/metadata`` and the audit log."""
        served = self._serving().bundle.version
        moment = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        self.status = {"ref": self.ref, "state": result, "version": served, "time": moment, **details}
        if result == "failed":
            self.status["refused"] = after
        audit.record(
            "follow",
            audit_log=self.settings.audit_log,
            root=self.store,
            ref=self.ref,
            result=result,
            serving=before,
            to=after,
            **details,
        )


_MEANING = {
    "differs": "it answers, but not what it answered at capture",
    "error": "the model raises on it",
    "timeout": f"it had not answered in {READY_SECONDS:g}s",
}
