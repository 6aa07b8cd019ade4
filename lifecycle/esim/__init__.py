"""The lifecycle side of the eIM: the esim dimension applied through ESipa (docs/ESIM.md)."""

from lifecycle.esim.component import EsimComponent, Verdict, judge

__all__ = ["EsimComponent", "Verdict", "judge"]
