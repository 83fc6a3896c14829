"""The job's feature step outside Flink: card, then terminal, per transaction.

``FeaturePath`` calls ``udfs.features`` with the arguments the job's keyed
operators (``jobs.operators.CardHistory`` and ``TerminalHistory``) pass, and
keeps each key's state in a dict. With ``pickled=True`` the state is stored
as pickled bytes and unpickled on every access, which is what the operators'
``PICKLED_BYTE_ARRAY`` value state costs in Python; Flink's own side of that
state (serialization, time-to-live, the state cache) is not included.
"""

from __future__ import annotations

import pickle

from udfs.features import CardFeatures, TerminalFeatures

_PROTOCOL = pickle.HIGHEST_PROTOCOL


class FeaturePath:
    """Card and terminal features of transactions, one at a time."""

    def __init__(self, label_delay_days: int = 7, pickled: bool = False):
        self.cards: dict = {}
        self.terminals: dict = {}
        self.terminal_features = TerminalFeatures(label_delay_days)
        self.pickled = pickled

    def update(self, transaction_id, event_time_ms: int, card_id, terminal_id, amount):
        """The features of one transaction, or None for a duplicate id."""
        card_state = self._load(self.cards, card_id)
        card, card_state = CardFeatures.update(
            card_state, transaction_id, event_time_ms, amount, terminal_id
        )
        if card.duplicate:
            return None
        self._store(self.cards, card_id, card_state)
        terminal, terminal_state = self.terminal_features.update(
            self._load(self.terminals, terminal_id), event_time_ms
        )
        self._store(self.terminals, terminal_id, terminal_state)
        return {**card.features, **terminal}

    def preload_cards(self, states: dict) -> None:
        """Hold ``states`` (card id -> state tuple) as if the cards had been seen."""
        for card_id, state in states.items():
            self._store(self.cards, card_id, state)

    def _load(self, states: dict, key):
        value = states.get(key)
        if value is None or not self.pickled:
            return value
        return pickle.loads(value)

    def _store(self, states: dict, key, state) -> None:
        states[key] = pickle.dumps(state, _PROTOCOL) if self.pickled else state
