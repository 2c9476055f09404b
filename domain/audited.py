"""An aggregate owned by one user whose every event records who caused it and links a hash chain.

Attribution (`caused_by`, `correlation_id`) and the chain (`previous_hash`, `hash`) are
stamped here, so a subclass's commands and events say only what happened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self
from uuid import UUID

from eventsourcing.domain import Aggregate, CanInitAggregate, CanMutateAggregate
from eventsourcing.domain import Snapshot as BaseSnapshot
from eventsourcing.utils import get_topic, register_topic

from agent_ledger.domain.hash_chain import GENESIS, recorded_hash

SYSTEM = "system"
"""Who caused an event when no command said otherwise."""


def _advance_chain(aggregate: Any, event: object) -> Any:
    aggregate.chain_head = event.__dict__.get("hash", "")  # events from before the chain
    return aggregate


class AuditedEvent(Aggregate.Event):
    """An event that says whose it is, who caused it, and links the hash chain."""

    user_id: str
    caused_by: str
    correlation_id: str | None
    previous_hash: str
    hash: str

    def mutate(self, aggregate: Any) -> Any:
        return _advance_chain(super().mutate(aggregate), self)


class AuditedCreated(Aggregate.Created):
    """The first event; it declares the fields of `AuditedEvent` itself, after its own."""

    def mutate(self, aggregate: Any) -> Any:
        return _advance_chain(super().mutate(aggregate), self)


class AuditedAggregate(Aggregate):
    """Stamps each event with its owner, its cause and its link in the chain; snapshots as JSON.

    A subclass sets `user_id` in its created event and declares its own `Snapshot`
    subclass (with its `TOPIC`), converting its value objects in `_plain_state` and
    `_restore_state`.
    """

    if TYPE_CHECKING:  # class annotations would make the aggregate a dataclass
        user_id: str
        chain_head: str
        _acting: tuple[str, str | None] | None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        snapshot = cls.__dict__.get("Snapshot")
        topic = getattr(snapshot, "TOPIC", None)
        if snapshot is not None and topic:
            # a snapshot is no aggregate event, so the library leaves its topic unregistered:
            # a process that never took one could not read one back
            register_topic(topic, snapshot)

    def act_as(self, caused_by: str, correlation_id: str | None = None) -> None:
        """Attribute the events this copy triggers from now on (who acts is not state)."""
        self._acting = (caused_by, correlation_id)

    @classmethod
    def _create_audited(
        cls,
        event_class: type[CanInitAggregate[UUID]],
        *,
        id: UUID,
        caused_by: str,
        correlation_id: str | None,
        **kwargs: Any,
    ) -> Self:
        """Create the aggregate with its first event attributed and linked to the genesis hash."""
        fields = dict(
            originator_topic=get_topic(cls),
            originator_id=id,
            originator_version=cls.INITIAL_VERSION,
            timestamp=event_class.create_timestamp(),
            **kwargs,
            caused_by=caused_by,
            correlation_id=correlation_id,
            previous_hash=GENESIS,
        )
        fields["hash"] = recorded_hash(get_topic(event_class), fields)
        del fields["originator_topic"], fields["originator_version"], fields["originator_id"]
        return cls._create(event_class, id=id, **fields)

    def trigger_event(self, event_class: type[CanMutateAggregate[UUID]], **kwargs: Any) -> None:
        """Stamp the event with owner, cause and chain link, then apply it."""
        caused_by, correlation_id = self.__dict__.get("_acting") or (SYSTEM, None)
        fields = dict(
            kwargs,
            originator_id=self.id,
            originator_version=self.version + 1,
            timestamp=event_class.create_timestamp(),
            user_id=self.user_id,
            caused_by=caused_by,
            correlation_id=correlation_id,
            previous_hash=self.chain_head,
        )
        fields["hash"] = recorded_hash(get_topic(event_class), fields)
        del fields["originator_id"], fields["originator_version"]
        super().trigger_event(event_class, **fields)

    def _plain_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """The snapshot state as plain JSON; a subclass turns its value objects into dicts."""
        return state

    def _restore_state(self) -> None:
        """After loading a snapshot, turn the plain JSON back into value objects."""

    class Snapshot(BaseSnapshot):
        """A snapshot whose state is plain JSON, without who acts now (that is not state)."""

        @classmethod
        def take(cls, aggregate: Any) -> Any:
            snapshot = super().take(aggregate)
            state = dict(snapshot.state)
            state.pop("_acting", None)
            object.__setattr__(snapshot, "state", aggregate._plain_state(state))
            return snapshot

        def mutate(self, _: None) -> Any:
            audited: Any = super().mutate(_)
            audited._restore_state()
            return audited
