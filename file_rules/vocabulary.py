"""Whether two language models share a vocabulary: their tokenizers' tokens compared id by id.

Embedding rows past a tokenizer's length (padding for tensor cores) are not tokens, so only the
token lists count, never ``vocab_size``. The API compares the token lists read from the uploads
(app/files/vocabulary.py) at submit; the worker's engine compares its loaded tokenizers with the
same wording (worker/engine/lm/models.py). Standard library only.
"""

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class VocabularyDifference:
    differing: int  # token ids whose token differs, or that one side lacks
    positions: tuple[int, ...]  # the first few such ids
    teacher_size: int
    student_size: int

    @property
    def message(self) -> str:
        where = ", ".join(str(p) for p in self.positions)
        more = ", ..." if self.differing > len(self.positions) else ""
        return (
            f"The student's vocabulary ({self.student_size:,} tokens) is not the teacher's "
            f"({self.teacher_size:,} tokens): {self.differing:,} token ids differ, at ids "
            f"{where}{more}. Distillation compares the two models token by token, so the student "
            "needs the teacher's tokenizer (padding rows past it are fine)."
        )


def vocabulary_difference(
    teacher_tokens: Sequence[str | None], student_tokens: Sequence[str | None], shown: int = 5
) -> VocabularyDifference | None:
    """Where two vocabularies (token strings by id; None for an id no token has) differ; None
    where they are the same."""
    size = max(len(teacher_tokens), len(student_tokens))
    differ = [
        i
        for i in range(size)
        if i >= len(teacher_tokens)
        or i >= len(student_tokens)
        or teacher_tokens[i] != student_tokens[i]
    ]
    if not differ:
        return None
    return VocabularyDifference(
        len(differ), tuple(differ[:shown]), len(teacher_tokens), len(student_tokens)
    )
