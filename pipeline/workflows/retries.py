"""A catalogue's quality gate: an image whose quality check says ``review`` is made again with the next seeds,
up to a number of retries; every try is recorded, and the best one is kept (README, "Quality check")."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.contract.request import MAX_SEED, BgReplaceRequest
from pipeline.contract.result import BgReplaceResult

MAX_RETRIES = 10
# The figures a new seed can change: a new background may hold no painted extension (expansion) and ask less
# of the light match (product_change). mask_uncertainty and upscale are the photo's own: a retry cannot help.
SEED_DEPENDENT = frozenset({"expansion", "product_change"})


@dataclass(frozen=True)
class Tries:
    best: BgReplaceResult
    record: list[dict[str, Any]]  # one entry per try: its seeds, verdicts and figures

    @property
    def status(self) -> str:
        """``done`` when the kept try passed the check, ``review`` when no try did."""
        return "review" if needs_review(self.best) else "done"


def verdicts(result: BgReplaceResult) -> list[str]:
    return [quality.get("verdict", "ok") for quality in result.info.get("quality", [])]


def needs_review(result: BgReplaceResult) -> bool:
    return "review" in verdicts(result)


def retry_can_help(result: BgReplaceResult) -> bool:
    """Whether another seed could pass the check: every image to review is over only on figures a seed changes.
    An image also over on the photo's own figures stays review whatever the seed, so it is not made again."""
    overs = [set(quality.get("over", [])) for quality in result.info.get("quality", [])
             if quality.get("verdict") == "review"]
    return bool(overs) and all(over and over <= SEED_DEPENDENT for over in overs)


def _badness(result: BgReplaceResult) -> tuple[int, float, float]:
    """How far a try is from passing: its images to review, then their summed expansion, then their summed
    product change (the figures a retry can change; the others depend on the photo alone)."""
    qualities = result.info.get("quality", [])
    return (verdicts(result).count("review"), sum(q.get("expansion") or 0.0 for q in qualities),
            sum(q.get("product_change") or 0.0 for q in qualities))


def make_with_retries(make: Callable[[BgReplaceRequest], BgReplaceResult], request: BgReplaceRequest,
                      retries: int) -> Tries:
    """``make(request)``, then while its images need review for a figure a new seed can change and retries are
    left, ``make`` again with the seeds that follow the last try's (a 2-sample try with seeds 7, 8 is followed by
    9, 10). The best try is kept. An item with an image over on the photo's own figures ends review at once."""
    result = make(request)
    tries = [result]
    while retry_can_help(result) and len(tries) <= retries:  # (so some image is to review)
        next_seed = (result.seeds[-1] + 1) % (MAX_SEED + 1)
        result = make(request.replace(seed=next_seed))
        tries.append(result)
    best = min(tries, key=_badness)  # min keeps the earliest of equals
    record = [{"seeds": list(each.seeds), "verdicts": verdicts(each), "quality": each.info.get("quality", []),
               "kept": each is best} for each in tries]
    return Tries(best=best, record=record)
