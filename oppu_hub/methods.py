"""What a method is, for ``oppu-hub eval`` (its columns), ``oppu-hub predict --method`` and the Space (its four
columns): the name, the column group and label, and what it predicts with (torch-free).

Every method is a name ``{family}-k{k}``, or the name of a model-free baseline
(:mod:`oppu_hub.baselines`: ``majority``, ``user-majority``, ``bm25-copy``; "–" where a task has none):

=============  ====================================================  =====================================
family         what it is                                            base / adapters
=============  ====================================================  =====================================
``np``         non-personalized, no history (``np-k0``)              base task-adapted with k=0
``random``     ``k`` random history items of *other* users           base with k
``rag``        ``k`` BM25-retrieved items of the user's history      base with k
``pag``        the user's textual profile (+ ``k`` retrieved items)  base with k + profile
``pooled``     one adapter for all evaluated users, trained on       base with k, one adapter trained as
               their histories together (+ ``k`` retrieved items)    ``oppu-kN``'s on the pooled history
``oppu``       RAG+OPPU: the user's adapter, trained with ``k``      base with k, adapters trained with k
``pag-oppu``   PAG+OPPU: adapter trained with profile and ``k``      base with k + profile, same adapters
``oppu-cd``    ``oppu`` with contrastive personal decoding           same as ``oppu``
``prior-np``   the base's label scores + the user's label prior      base with k
``oppu-prior`` ``oppu``'s label scores + the user's label prior      same as ``oppu``
``two-stage``  collective then personal: ``oppu``'s adapters on a    base with k + a LoRA on the training
               base that also learnt every *training* user's         users' histories, merged; adapters
               history; ``two-stage-pooled``: that stage on the      trained as ``oppu-kN``'s on it
               evaluated users' histories (the pooled control's)
=============  ====================================================  =====================================

``oppu-cd``, ``prior-np`` and ``oppu-prior`` decode with :class:`~oppu_hub.decoding_config.DecodingOptions`
(``contrast_alpha``, ``prior_weight``); ``--answers labels`` scores the labels of classification and rating tasks
for every method instead of generating (the prior methods always do; they have no row on generation tasks). The
two-stage methods' collective stage: :mod:`trainers.collective`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .baselines import BASELINES
from .decoding_config import Answers

# Each family's column group; groups in the table's order (the paper's, with baselines first and the pooled
# control beside RAG+OPPU).
FAMILIES = {
    **dict.fromkeys(BASELINES, "Baselines"),
    "np": "Non-Personalized",
    "random": "Non-Personalized",
    "rag": "RAG",
    "pag": "PAG",
    "pooled": "Pooled",
    "oppu": "RAG+OPPU",
    "pag-oppu": "PAG+OPPU",
    "oppu-cd": "RAG+OPPU",
    "prior-np": "Non-Personalized",
    "oppu-prior": "RAG+OPPU",
    "two-stage": "Two-stage",
    "two-stage-pooled": "Two-stage",
}
GROUP_ORDER = ("Baselines", "Non-Personalized", "RAG", "PAG", "Pooled", "RAG+OPPU", "PAG+OPPU", "Two-stage")
TABLE2_METHODS = ("np-k0", "random-k1", "rag-k1", "rag-k2", "rag-k4", "pag-k0", "pag-k1",
                  "oppu-k0", "oppu-k1", "oppu-k2", "oppu-k4", "pag-oppu-k0", "pag-oppu-k1")
DEFAULT_METHODS = (*BASELINES, *TABLE2_METHODS, "pooled-k0", "pooled-k1")
SMALL_METHODS = ("np-k0", "random-k1", "rag-k1", "oppu-k0", "oppu-k1")
_METHOD = re.compile(r"(pag-oppu|pag|pooled|oppu-cd|oppu-prior|oppu|prior-np|np|random|rag|two-stage-pooled|two-stage)"
                     r"-k(\d+)|("
                     + "|".join(map(re.escape, BASELINES)) + ")")
_VARIANTS = ("oppu-cd", "oppu-prior", "prior-np", "two-stage-pooled")  # after their plain family in a column group


@dataclass(frozen=True)
class Method:
    """One column of the leaderboard (see the module docstring for the names; a baseline has ``k=0``)."""

    family: str
    k: int

    @property
    def name(self) -> str:
        return self.family if self.baseline else f"{self.family}-k{self.k}"

    @property
    def group(self) -> str:
        return FAMILIES[self.family]

    @property
    def label(self) -> str:
        if self.baseline:
            return self.family
        variant = {"random": "random ", "oppu-cd": "CD ", "oppu-prior": "prior ", "prior-np": "prior ",
                   "two-stage-pooled": "pooled "}
        return f"{variant.get(self.family, '')}k={self.k}"

    @property
    def baseline(self) -> bool:
        """A model-free baseline (:mod:`oppu_hub.baselines`)."""
        return self.family in BASELINES

    @property
    def pooled(self) -> bool:
        """One adapter trained on all evaluated users' histories together
        (:meth:`oppu_hub.pipeline.Pipeline.pooled_adapter`)."""
        return self.family == "pooled"

    @property
    def profile(self) -> bool:
        return self.family in ("pag", "pag-oppu")

    @property
    def oppu(self) -> bool:
        """Predicts with the evaluated users' own adapters."""
        return self.family in ("oppu", "pag-oppu", "oppu-cd", "oppu-prior", "two-stage", "two-stage-pooled")

    @property
    def collective(self) -> str | None:
        """Whose histories the collective stage under its adapters trained on (two-stage methods:
        :class:`trainers.collective_config.CollectiveConfig` ``users``): ``train``, ``pooled``, else ``None``."""
        return {"two-stage": "train", "two-stage-pooled": "pooled"}.get(self.family)

    @property
    def contrastive(self) -> bool:
        return self.family == "oppu-cd"

    @property
    def prior(self) -> bool:
        """Label scores shifted by the user's label prior (classification and rating tasks only)."""
        return self.family in ("prior-np", "oppu-prior")

    @property
    def random_history(self) -> bool:
        return self.family == "random"

    def prediction_settings(self, answers: Answers = "generate") -> dict[str, Any]:
        """The :class:`~oppu_hub.predict_config.PredictConfig` fields this method sets: ``k``, ``profile``,
        ``random_history``, ``contrastive``, ``prior`` and ``answers`` (labels scored for the prior methods,
        generation for contrastive decoding, else ``answers``). Which adapters it loads: :attr:`oppu` (each user's),
        :attr:`pooled` (the pooled one), else none."""
        if self.baseline:
            raise ValueError(f"{self.name} is a model-free baseline: no model predicts it")
        return {"k": self.k, "profile": self.profile, "random_history": self.random_history,
                "contrastive": self.contrastive, "prior": self.prior,
                "answers": "labels" if self.prior else "generate" if self.contrastive else answers}

    def sort_key(self) -> tuple[int, int, int]:
        within = (BASELINES.index(self.family) if self.baseline else int(self.family == "random")
                  + 2 * (1 + _VARIANTS.index(self.family) if self.family in _VARIANTS else 0))
        return GROUP_ORDER.index(self.group), within, self.k


def parse_method(name: str | Method) -> Method:
    """``"rag-k2"`` -> ``Method("rag", 2)``, ``"majority"`` -> ``Method("majority", 0)``; raises ``ValueError``
    naming the known forms."""
    if isinstance(name, Method):
        return name
    match = _METHOD.fullmatch(str(name).strip().lower())
    if match is None:
        families = ", ".join(f for f in FAMILIES if f not in BASELINES)
        raise ValueError(f"unknown method {name!r}; expected a baseline ({', '.join(BASELINES)}) or FAMILY-kN with "
                         f"FAMILY one of {families} (e.g. {', '.join(SMALL_METHODS)})")
    if match.group(3):
        return Method(match.group(3), 0)
    method = Method(match.group(1), int(match.group(2)))
    if method.family == "np" and method.k != 0:
        raise ValueError(f"{name!r}: the non-personalized method has no history (use np-k0, rag-kN or random-kN)")
    if method.family == "random" and method.k == 0:
        raise ValueError(f"{name!r}: random history needs k >= 1")
    return method


@dataclass(frozen=True)
class SpaceColumn:
    """One of the Space's answer columns: a family at k=0, or at the k the visitor picks (``retrieves``).

    Args:
        name: the column's short name (the Space's results and notes).
        label: the title of its answer box.
        family: the method family (``np``, ``rag``, ``oppu``).
        retrieves: the column uses the visitor's k (its base and adapter trained with that k), else k=0.
    """

    name: str
    label: str
    family: str
    retrieves: bool

    def method(self, k: int) -> Method:
        """The method the column runs when the visitor picks ``k`` retrieved items."""
        return Method(self.family, k if self.retrieves else 0)


SPACE_COLUMNS = (
    SpaceColumn("non-personalized", "Non-personalized base", "np", retrieves=False),
    SpaceColumn("RAG", "Base + retrieval (RAG)", "rag", retrieves=True),
    SpaceColumn("OPPU", "Base + user adapter (OPPU)", "oppu", retrieves=False),
    SpaceColumn("OPPU + RAG", "OPPU + retrieval", "oppu", retrieves=True),
)
# The Space's optional columns: OPPU + retrieval with contrastive personal decoding (eval's ``oppu-cd-kN``), and
# collective then personal (``two-stage-k0``: the user's residual adapter on the collective base of training users).
SPACE_CONTRASTIVE = SpaceColumn("OPPU-CD", "OPPU + retrieval, contrastive decoding", "oppu-cd", retrieves=True)
SPACE_TWO_STAGE = SpaceColumn("two-stage", "Collective base + user residual (two-stage)", "two-stage",
                              retrieves=False)

__all__ = ["DEFAULT_METHODS", "FAMILIES", "GROUP_ORDER", "SMALL_METHODS", "SPACE_COLUMNS", "SPACE_CONTRASTIVE",
           "SPACE_TWO_STAGE", "TABLE2_METHODS", "Method", "SpaceColumn", "parse_method"]
