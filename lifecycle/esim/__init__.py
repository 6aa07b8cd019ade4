"""The lifecycle side of the eIM: the esim and esim_download dimensions applied through ESipa
(docs/ESIM.md)."""

from lifecycle.esim.component import (
    EsimComponent,
    FallbackError,
    Verdict,
    check_fallback,
    judge,
    judge_download,
)

__all__ = ["EsimComponent", "FallbackError", "Verdict", "check_fallback", "judge", "judge_download"]
