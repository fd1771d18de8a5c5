"""The `--stage` pairs as one configuration: what is known good, what is on probation, what is
bad. They are staged, validated, published, proven and rolled back together.

A configuration is named by its id: the one pair's content digest, or a digest over all of
them. What cfgsup knows survives a container restart: every DEST keeps the same record (its own
generation names, the shared ids) in its state file, and `load()` reads it back at start.
"""
from __future__ import annotations

import xxhash

from .digest import short
from .stage import Stage, StageError

BAD_KEPT = 64  # bad configuration ids remembered (the oldest are forgotten first)


def config_id(digests) -> str:
    digests = tuple(digests)
    if len(digests) == 1:
        return digests[0]
    return xxhash.xxh3_128_hexdigest(",".join(digests).encode())


class Rollout:
    Error = StageError  # what a failed write of DEST raises: the trigger failed, not the content

    def __init__(self, stages: list[Stage], keep: int, snapshot, include=(), exclude=()):
        self.stages = stages
        self.keep = keep
        self.snapshot = snapshot            # the digest function (the fake OS's, in unit tests)
        self.filters = (include, exclude)   # what counts, as for the watches
        self.good: str | None = None        # id of the last-known-good configuration
        self.good_gens: list = [None] * len(stages)
        self.candidate: str | None = None   # id of the configuration staged or on probation
        self.candidate_gens: list = [None] * len(stages)
        self.bad: list[str] = []            # ids that failed validation or probation

    def __repr__(self) -> str:
        return f"<Rollout good={short(self.good)} candidate={short(self.candidate)} bad={len(self.bad)}>"

    # ---- persisted state --------------------------------------------------------------------
    def load(self) -> None:
        states = [stage.load() for stage in self.stages]
        for state in states:
            for cid in state.get("bad", ()):
                if isinstance(cid, str) and cid not in self.bad:
                    self.bad.append(cid)
        self.bad = self.bad[-BAD_KEPT:]
        for kind in ("good", "candidate"):
            records = [state.get(kind) or {} for state in states]
            ids = {r.get("config") for r in records}
            gens = [r.get("gen") for r in records]
            # Every DEST must name the same configuration, and still hold its generation.
            if len(ids) == 1 and None not in ids and all(
                    isinstance(g, str) and g in stage.generations() for g, stage in zip(gens, self.stages)):
                setattr(self, kind, ids.pop())
                setattr(self, kind + "_gens", gens)

    def save(self) -> None:
        for index, stage in enumerate(self.stages):
            state = {"bad": self.bad}
            if self.good:
                state["good"] = {"config": self.good, "gen": self.good_gens[index]}
            if self.candidate:
                state["candidate"] = {"config": self.candidate, "gen": self.candidate_gens[index]}
            stage.save(state)

    # ---- what is where ----------------------------------------------------------------------
    def is_bad(self, cid: str) -> bool:
        return cid in self.bad

    def published(self) -> str | None:
        """Which known configuration DEST shows now: 'good', 'candidate' or None."""
        gens = [stage.published() for stage in self.stages]
        if self.good and gens == self.good_gens:
            return "good"
        if self.candidate and gens == self.candidate_gens:
            return "candidate"
        return None

    def plan(self, cid: str) -> str:
        """What a start does with configuration `cid` in SRC: run the last-known-good (`good`),
        give a published candidate its probation (`probation`), hold content known bad back
        (`held`), or stage, validate and prove it (`new`)."""
        published = self.published()
        if cid == self.good:
            if published != "good":
                self.publish("good")
            return "good"
        if cid == self.candidate and published == "candidate":
            return "probation"
        return "held" if self.is_bad(cid) and self.good else "new"

    def publish_good(self) -> list:
        """Make sure DEST shows the last-known-good; its snapshots."""
        if self.published() != "good":
            self.publish("good")
        return self.snapshots("good")

    def snapshots(self, which: str) -> list:
        gens = self.good_gens if which == "good" else self.candidate_gens
        return [self.snapshot(stage.path(gen), None, *self.filters) for stage, gen in zip(self.stages, gens)]

    def env(self) -> dict:
        """For the validator: the candidate directories and the DESTs, in --stage order."""
        return {"CFGSUP_CANDIDATE": ":".join(s.path(g) for s, g in zip(self.stages, self.candidate_gens)),
                "CFGSUP_STAGE": ":".join(s.dest for s in self.stages)}

    # ---- transitions ------------------------------------------------------------------------
    def stage_candidate(self) -> tuple[str, list]:
        """Copy every SRC into a new candidate generation (invisible to the app). Returns its id
        and snapshots. Raises StageError (DEST cannot be written) or ValueError (SRC unreadable)."""
        self.discard_candidate()
        gens = []
        try:
            for stage in self.stages:
                gens.append(stage.copy())
        except BaseException:
            for stage, gen in zip(self.stages, gens):
                stage.remove(gen)
            raise
        snaps = [self.snapshot(stage.path(gen), None, *self.filters) for stage, gen in zip(self.stages, gens)]
        self.candidate, self.candidate_gens = config_id(s.digest for s in snaps), gens
        return self.candidate, snaps

    def discard_candidate(self) -> None:
        """A candidate that is not published goes, leaving DEST as it was."""
        if self.candidate and self.published() != "candidate":
            for stage, gen in zip(self.stages, self.candidate_gens):
                if gen not in self.good_gens:
                    stage.remove(gen)
        if self.published() != "candidate":
            self.candidate, self.candidate_gens = None, [None] * len(self.stages)

    def publish(self, which: str) -> None:
        gens = self.good_gens if which == "good" else self.candidate_gens
        for stage, gen in zip(self.stages, gens):
            stage.publish(gen)
        self.save()

    def mark_bad(self, cid: str) -> None:
        if cid and cid not in self.bad:
            self.bad = (self.bad + [cid])[-BAD_KEPT:]
        self.discard_candidate()
        try:
            self.save()
        except StageError:
            pass  # remembered in memory; the next save writes it

    def accept(self) -> None:
        """The candidate passed probation: it is the last-known-good now."""
        self.good, self.good_gens = self.candidate, list(self.candidate_gens)
        self.candidate, self.candidate_gens = None, [None] * len(self.stages)
        self.save()
        for stage, gen in zip(self.stages, self.good_gens):
            stage.prune({gen}, self.keep - 1)

    def roll_back(self) -> None:
        """The candidate failed probation: it is bad, and the last-known-good is published. The
        bad mark is saved first: killed in between, the next start still finds it."""
        failed = self.candidate
        if failed and failed not in self.bad:
            self.bad = (self.bad + [failed])[-BAD_KEPT:]
        self.save()
        self.publish("good")
        self.discard_candidate()
        self.save()
