"""Log when a device's values turn Bad and when they are good again, one pair of lines per spell and status."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable
from typing import Any

from .backoff import RepeatLimiter
from .samples import Sample
from .values import IMPLAUSIBLE_TIME

__all__ = ("BadValueLog",)

# Tags named in one line; ``count`` gives the full number.
_TAGS_SHOWN = 10
# Bad details that other lines report: a lost connection (``*.disconnected``) and an implausible PLC time (``plc_time_implausible``).
_REPORTED_ELSEWHERE = ("disconnected", IMPLAUSIBLE_TIME)


class _Spell:
    """The tags that have had one Bad status since it first appeared, and those that still have it."""

    def __init__(self, started: float, logged: bool) -> None:
        self.started = started
        self.logged = logged
        self.tags: list[str] = []
        self.current: set[str] = set()


class BadValueLog:
    """Logs ``<prefix>.values_bad`` when a status turns a device's values Bad, and ``<prefix>.values_good`` when none has it any more.

    A spell of one Bad status (``BadSensorFailure`` from an OPC UA server,
    ``out_of_range`` or a Modbus exception name) starts when the first tag
    gets it and ends when the last tag that had it reads good again. Its
    warning names the status and the tags that turned Bad in that batch.
    Its info line names every tag the spell touched and how long it lasted
    (``bad_s``). Warnings are let through at most once per ``interval_s``
    per status, with the number of spells held back. A spell whose warning
    was held back ends without a line, so every warning in the journal has
    its recovery line. Each status has its own spell, so a tag
    that stays Bad does not hide a new status on other tags.
    """

    def __init__(self, log: Any, prefix: str, *, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.prefix = prefix
        self._clock = clock
        self._repeats = RepeatLimiter(interval_s, clock=clock)
        self._bad: dict[str, str] = {}
        self._spells: dict[str, _Spell] = {}

    def observe(self, samples: Iterable[Sample], *, skip: Collection[str] = ()) -> None:
        """Follow the status of each sample's tag; ``skip`` names tags whose Bad status is reported elsewhere."""
        turned_bad: dict[str, list[str]] = {}
        for sample in samples:
            if sample.tag in skip or (sample.status == "bad" and sample.detail.startswith(_REPORTED_ELSEWHERE)):
                continue
            status = (sample.detail or "bad") if sample.status == "bad" else None
            previous = self._bad.get(sample.tag)
            if status == previous:
                continue
            if previous is not None:
                del self._bad[sample.tag]
                self._spells[previous].current.discard(sample.tag)
            if status is not None:
                self._bad[sample.tag] = status
                spell = self._spells.get(status)
                if spell is None:
                    spell = self._spells[status] = _Spell(self._clock(), logged=False)
                    turned_bad[status] = []
                if sample.tag not in spell.tags:
                    spell.tags.append(sample.tag)
                spell.current.add(sample.tag)
                if status in turned_bad:
                    turned_bad[status].append(sample.tag)

        for status, tags in turned_bad.items():
            held = self._repeats(status)
            if held is not None:
                self._spells[status].logged = True
                self.log.warning(f"{self.prefix}.values_bad", status=status, tags=tags[:_TAGS_SHOWN], count=len(tags), repeats_not_logged=held)
        for status in [status for status, spell in self._spells.items() if not spell.current]:
            spell = self._spells.pop(status)
            if spell.logged:
                bad_s = round(self._clock() - spell.started, 1)
                self.log.info(f"{self.prefix}.values_good", status=status, tags=spell.tags[:_TAGS_SHOWN], count=len(spell.tags), bad_s=bad_s)
