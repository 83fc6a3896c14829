"""Domain exceptions raised on purpose by txwatch.

Every exception here carries enough context to act on: the thing concerned, what
was wrong with it and what to do instead. They pickle with their attributes intact,
so they survive the trip from a Python worker back to the Flink task manager.
"""

from __future__ import annotations


class TxwatchError(Exception):
    """Base class of every error txwatch raises on purpose."""


class RuleError(TxwatchError):
    """A rule, a rule command or a rule condition is invalid.

    Parameters
    ----------
    reason
        What is wrong, where (field, offset or token) and what to do about it.
    rule_id
        The rule concerned, or None when it is not known, for example when a bare
        condition is compiled on its own.
    """

    def __init__(self, reason: str, rule_id: str | None = None) -> None:
        super().__init__(reason, rule_id)
        self.reason = reason
        self.rule_id = rule_id

    def __str__(self) -> str:
        if self.rule_id is None:
            return self.reason
        return f"rule {self.rule_id!r}: {self.reason}"


class ValidationError(TxwatchError):
    """An input record or argument does not have the shape txwatch needs.

    Parameters
    ----------
    reason
        A short snake_case code that callers and metrics can match on, for example
        ``"missing_event_time"``.
    detail
        Human-readable text naming the field, the value received and the remedy.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.detail} [{self.reason}]"
