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


def _is_id(value) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 64 and value.isalnum()


class Rollout:
    Error = StageError  # what a failed write of DEST raises: the trigger failed, not the content

    def __init__(self, stages: list[Stage], keep: int, snapshot, include=(), exclude=()):
        self.stages = stages
        self.keep = keep
        self.snapshot = snapshot            # the digest function (the fake OS's, in unit tests)
        self.filters = (include, exclude)   # what counts, as for the watches
        # Each configuration known by name: its id (from SRC's digests, so content SRC has and
        # a copy leaves out, a FIFO say, never makes it look new), SRC's digest per pair, and
        # the generation holding it in each DEST.
        self.good: str | None = None        # the last-known-good
        self.good_gens: list = [None] * len(stages)
        self.good_digests: list = [None] * len(stages)
        self.candidate: str | None = None   # staged, or published and on probation
        self.candidate_gens: list = [None] * len(stages)
        self.candidate_digests: list = [None] * len(stages)
        self.bad: list[str] = []            # ids that failed validation or probation
        self.save_error: str | None = None  # why the last save failed (retried at the next one)

    def __repr__(self) -> str:
        return f"<Rollout good={short(self.good)} candidate={short(self.candidate)} bad={len(self.bad)}>"

    # ---- persisted state --------------------------------------------------------------------
    def load(self) -> None:
        """Read the state back; anything in it that makes no sense is ignored (the pod's other
        users can write DEST)."""
        states = [stage.load() for stage in self.stages]
        bad = {}  # ordered, and linear in the size of a (maybe hostile) state file
        for state in states:
            listed = state.get("bad")
            for cid in listed[-BAD_KEPT:] if isinstance(listed, list) else ():
                if _is_id(cid):
                    bad[cid] = None
        self.bad = list(bad)[-BAD_KEPT:]
        for kind in ("good", "candidate"):
            records = [state.get(kind) if isinstance(state.get(kind), dict) else {} for state in states]
            ids = {r.get("config") if _is_id(r.get("config")) else None for r in records}
            gens = [r.get("gen") for r in records]
            digests = [r.get("digest") for r in records]
            # Every DEST must name the same configuration, and still hold its generation.
            if (len(ids) == 1 and None not in ids and all(_is_id(d) for d in digests)
                    and all(g in stage.generations() for g, stage in zip(gens, self.stages))):
                setattr(self, kind, ids.pop())
                setattr(self, kind + "_gens", gens)
                setattr(self, kind + "_digests", digests)

    def prune_strays(self) -> None:
        """At start: generations no state names (candidates of a cfgsup killed while it
        validated them) go, or every kill would leave a full copy of SRC behind."""
        for index, stage in enumerate(self.stages):
            keep = {self.good_gens[index], self.candidate_gens[index], stage.published()}
            for gen in stage.generations():
                if gen not in keep:
                    stage.remove(gen)

    def save(self) -> bool:
        """Write the state into every DEST; False (and save_error says why) when it could not
        be written: what it holds is kept in memory and written at the next save."""
        try:
            for index, stage in enumerate(self.stages):
                state = {"bad": self.bad}
                for kind in ("good", "candidate"):
                    if getattr(self, kind):
                        state[kind] = {"config": getattr(self, kind), "gen": getattr(self, kind + "_gens")[index],
                                       "digest": getattr(self, kind + "_digests")[index]}
                stage.save(state)
        except StageError as exc:
            self.save_error = exc.strerror
            return False
        self.save_error = None
        return True

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
        hold content known bad back (`held`: that comes first, even if a candidate of it is
        still published, killed in the middle of its rollback), give a published candidate its
        probation (`probation`), or stage, validate and prove it (`new`). Raises StageError
        when the last-known-good must be published and cannot be."""
        if cid == self.good:
            self.publish("good")  # also puts the visible links right after a kill in a publish
            return "good"
        if self.is_bad(cid) and self.good:
            return "held"
        if cid == self.candidate and self.published() == "candidate":
            return "probation"
        return "new"

    def publish_good(self) -> list:
        """Make sure DEST shows the last-known-good (its visible links too); its snapshots."""
        self.publish("good")
        return self.snapshots("good")

    def snapshots(self, which: str) -> list:
        """What the app sees of a configuration, named by SRC's digests (what the watches
        compare with)."""
        gens = getattr(self, which + "_gens")
        digests = getattr(self, which + "_digests")
        return [self.snapshot(stage.path(gen), None, *self.filters)._replace(digest=digest)
                for stage, gen, digest in zip(self.stages, gens, digests)]

    def env(self) -> dict:
        """For the validator: the candidate directories and the DESTs, in --stage order."""
        return {"CFGSUP_CANDIDATE": ":".join(s.path(g) for s, g in zip(self.stages, self.candidate_gens)),
                "CFGSUP_STAGE": ":".join(s.dest for s in self.stages)}

    # ---- transitions ------------------------------------------------------------------------
    def stage_candidate(self, cid: str, digests: list) -> None:
        """Copy every SRC into a new candidate generation (invisible to the app), as
        configuration `cid` (SRC's digests). Raises StageError (DEST cannot be written) or
        ValueError (SRC cannot be copied whole)."""
        self.discard_candidate()
        gens = []
        try:
            for stage in self.stages:
                gens.append(stage.copy())
        except BaseException:
            for stage, gen in zip(self.stages, gens):
                stage.remove(gen)
            raise
        self.candidate, self.candidate_gens, self.candidate_digests = cid, gens, list(digests)

    def discard_candidate(self) -> None:
        """A candidate that is not published goes, leaving DEST as it was (a generation a DEST
        shows is never removed, whatever happened to the others)."""
        if self.published() == "candidate":
            return
        if self.candidate:
            for stage, gen in zip(self.stages, self.candidate_gens):
                if gen not in self.good_gens and gen != stage.published():
                    stage.remove(gen)
        self.candidate = None
        self.candidate_gens, self.candidate_digests = [None] * len(self.stages), [None] * len(self.stages)

    def publish(self, which: str) -> None:
        """Swap every DEST to that configuration. Raises StageError when one cannot be; the
        DESTs already swapped are swapped back first, so the pairs never show two configurations
        at once (as far as DEST lets us)."""
        before = [stage.published() for stage in self.stages]
        done = []
        try:
            for stage, gen in zip(self.stages, getattr(self, which + "_gens")):
                stage.publish(gen)
                done.append(stage)
        except StageError:
            for stage, gen in zip(done, before):
                if gen:
                    try:
                        stage.publish(gen)
                    except StageError:
                        pass
            raise
        self.save()

    def mark_bad(self, cid: str) -> None:
        if _is_id(cid) and cid not in self.bad:
            self.bad = (self.bad + [cid])[-BAD_KEPT:]
        self.discard_candidate()
        self.save()

    def accept(self) -> None:
        """The candidate passed probation: it is the last-known-good now."""
        self.good, self.good_gens, self.good_digests = (
            self.candidate, list(self.candidate_gens), list(self.candidate_digests))
        self.candidate = None
        self.candidate_gens, self.candidate_digests = [None] * len(self.stages), [None] * len(self.stages)
        self.save()
        for stage, gen in zip(self.stages, self.good_gens):
            stage.prune({gen}, self.keep - 1)

    def roll_back(self) -> None:
        """The candidate failed probation: it is bad, and the last-known-good is published. The
        bad mark is saved first: killed in between, the next start still finds it (and plan()
        holds it back). Raises StageError when the last-known-good cannot be published; the bad
        mark is kept in memory, and a later call tries again."""
        if self.candidate and self.candidate not in self.bad:
            self.bad = (self.bad + [self.candidate])[-BAD_KEPT:]
        self.save()
        self.publish("good")
        self.discard_candidate()
        self.save()
