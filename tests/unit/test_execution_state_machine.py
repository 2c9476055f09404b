"""Random command sequences against the Execution aggregate, checked against a small model.

Every command the aggregate offers is tried in every state, on every step (and one the
process does not have), with the step's current attempt, a stale one or a later one. A
command the model allows must record exactly one event of its type; one it refuses must
raise the domain's rule error and leave the aggregate as it was (a command refused only
because the execution has finished raises `ExecutionFinishedError`). After every step the
aggregate equals the model, the version counts the events, each event links to its
predecessor's hash and hashes to what it says, attempts and tool calls add up, and
replaying the events (from nothing, from a snapshot, from the store) gives the live state.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from functools import reduce
from typing import Any, NamedTuple

import pytest
from eventsourcing.application import Application
from eventsourcing.utils import get_topic
from hypothesis import HealthCheck, Phase, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from agent_ledger.application.audit import verify_stored
from agent_ledger.application.event_log import topics_by_type
from agent_ledger.domain.execution_state import (
    ExecutionFinishedError,
    ExecutionRuleError,
    ExecutionStatus,
    StepState,
    StepStatus,
)
from agent_ledger.domain.executions import SYSTEM, Execution, StepEvent
from agent_ledger.domain.hash_chain import GENESIS, recorded_hash

USER = "alice"
STEPS = ("triage", "data", "summary")
GHOST = "ghost"  # not a step of the process
OFFSETS = (0, 1, -1)  # the step's current attempt, the next one, a stale one
CALLS = ("call-1", "call-2")
LATER = datetime(2030, 1, 1, tzinfo=UTC)
TERMINAL_EVENTS = (
    Execution.ExecutionCompleted,
    Execution.ExecutionFailed,
    Execution.ExecutionCancelled,
    Execution.ExecutionTimedOut,
)
FINISHING = ("complete", "fail", "cancel", "time_out")
NO_STEP = ("request_cancellation", "take_over", "receive_signal", "resume", "record_fork")
"""Commands about the whole execution: they move no one step."""
AFTER_THE_END = ("resume",)  # the one command a finished execution may take
SIGNAL = "approval"
PAYLOAD = {"approved": True}
CUT_SHORT = ("skip_step", "cancel_step")
SIDE_MOVES = ("save", "snapshot", SYSTEM, "user:alice", "admin:root")
ENDING = ("complete_step", "fail_step", "retry_step", "time_out_step")
WEIGHTS = dict.fromkeys(NO_STEP + CUT_SHORT + ENDING, 1)  # the others 4
ORDER = (  # how actions are listed: a step's life in order, then the rest
    "schedule_step",
    "start_step",
    "start_agent",
    "start_tool",
    "complete_tool",
    "fail_tool",
    "complete_agent",
    "fail_agent",
    "record_thinking",
    "await_signal",
    "take_signal_for",
    "record_output_delta",
    "complete_llm_call",
    "fire_timer",
    "start_timer",
    "evaluate_gateway",
    "complete_step",
    "time_out_step",
    "retry_step",
    "fail_step",
    *CUT_SHORT,
    *NO_STEP,
    *FINISHING,
)
RANK = {name: i for i, name in enumerate(ORDER)}
COMPLETED, FAILED = ExecutionStatus.COMPLETED, ExecutionStatus.FAILED
CANCELLED, TIMED_OUT = ExecutionStatus.CANCELLED, ExecutionStatus.TIMED_OUT
TIMED_OUT_STEP = StepStatus.TIMED_OUT
TERMINAL_STATUSES = tuple(s for s in ExecutionStatus if s.is_terminal)
RESUMABLE = (ExecutionStatus.FAILED, ExecutionStatus.TIMED_OUT, ExecutionStatus.CANCELLED)
UNDER_WAY = (StepStatus.SCHEDULED, StepStatus.RUNNING, StepStatus.RETRYING, StepStatus.TIMED_OUT)


def state_of(execution: Execution, copied: bool = False) -> dict[str, Any]:
    """Everything an execution is, besides the events it has yet to save and who acts now."""
    state = {k: v for k, v in vars(execution).items() if k not in {"_pending_events", "_acting"}}
    return copy.deepcopy(state) if copied else state


def replay(events: list[Any], start: Execution | None = None) -> Execution:
    """Fold events onto an aggregate (None: from nothing), as the repository does."""
    execution: Any = reduce(lambda aggregate, event: event.mutate(aggregate), events, start)
    assert isinstance(execution, Execution)
    return execution


def pick(data: st.DataObject, actions: list[Action], turn: int, by_name: bool = False) -> Action:
    """One of `actions`, or of the commands first and then of its arguments (`by_name`).

    Hypothesis draws 0 far more often than other numbers (its simplest example is all
    zeros), so each draw counts from a place that moves on every turn."""

    def one_of(choices: list[Any]) -> Any:
        return choices[(data.draw(st.integers(0, len(choices) - 1)) + turn) % len(choices)]

    if by_name:
        name = one_of(list(dict.fromkeys(a.name for a in actions)))
        actions = [a for a in actions if a.name == name]
    action: Action = one_of(actions)
    note(f"-> {action!r}")
    return action


def no_effect() -> None:
    """What a command that changes no state does to the model."""


class Action(NamedTuple):
    """One command with its arguments, whether the model allows it, and what it then does."""

    name: str
    args: tuple[Any, ...]
    command: Callable[[Execution], None]
    allowed: bool
    records: type
    effect: Callable[[], None] = no_effect

    def __repr__(self) -> str:
        return f"{self.name}{self.args!r}"


class ExecutionMachine(RuleBasedStateMachine):
    """Executions driven by random commands, one after the other; a model says which
    commands the rules allow."""

    recorded: Counter[str] = Counter()
    """Event types recorded over the whole run, to show that the machine reached them all."""
    refused: Counter[str] = Counter()

    def __init__(self) -> None:
        super().__init__()
        self.app: Application[Any] = Application()
        self.turn = 0
        self.begin()

    def begin(self) -> None:
        """Start a new execution (the previous one, if any, has finished)."""
        self.execution = Execution.start(
            user_id=USER,
            process_name="p",
            process_version=1,
            definition={"steps": [{"id": s} for s in STEPS]},
            step_ids=list(STEPS),
            input={"q": 1},
        )
        self.events: list[Any] = list(self.execution.pending_events)
        ExecutionMachine.recorded["ExecutionStarted"] += 1
        self.actors = [SYSTEM]
        self.actor = SYSTEM
        self.saved = 0
        self.snapshot: Any = None
        self.hashes_checked = 0
        self.cached_actions: tuple[int, list[Action]] = (0, [])
        # the model: what the execution should be, written apart from the aggregate's code
        self.status = ExecutionStatus.PENDING
        self.output: Any = None
        self.error: dict[str, Any] | None = None
        self.cancellation: dict[str, str] | None = None
        self.steps = {s: StepState(s) for s in STEPS}
        self.inbox: list[dict[str, Any]] = []
        self.parent = Execution.start(
            user_id=USER,
            process_name="p",
            process_version=1,
            definition={"steps": [{"id": s} for s in STEPS]},
            step_ids=list(STEPS),
            input={"q": 0},
        )

    # -- the rules of the machine ----------------------------------------------------------------

    @rule(data=st.data(), move=st.integers(0, 9))
    def move(self, data: st.DataObject, move: int) -> None:
        """Mostly a command the model allows, else any command, now and then a side move.

        One rule rather than three: Hypothesis switches whole rules off in some runs, and a
        run of side moves alone tests nothing."""
        if move < 5:
            self.allowed_command(data)
        elif move < 7:  # on a step's current attempt: refused for what the step is doing
            self.run(pick(data, self.on_current_attempts(), self.next_turn(), by_name=True))
        elif move < 9:  # stale and later attempts, a missing step: mostly refused
            self.run(pick(data, self.actions(), self.next_turn(), by_name=True))
        else:
            self.side_move(data.draw(st.sampled_from(SIDE_MOVES)))

    def allowed_command(self, data: st.DataObject) -> None:
        """A command the model allows: what takes a run deep. Commands that end an attempt,
        cut a step short or stand aside are chosen less often than those that move an
        attempt on; the execution finishes once no step can move, as the engine would.
        Once it has finished, a new execution starts."""
        allowed = [a for a in self.actions() if a.allowed and a.name not in FINISHING]
        if not any(a.name not in NO_STEP for a in allowed):
            allowed = [self.finishing(kind) for kind in FINISHING]
        weighted = [a for a in allowed for _ in range(WEIGHTS.get(a.name, 4))]
        if self.status.is_terminal:  # it has been refused everything since: next one
            self.begin()
        else:
            self.run(pick(data, weighted, self.next_turn()))

    def side_move(self, move: str) -> None:
        """Store the events, take a snapshot, or act as someone else."""
        if move == "save":
            self.save()
        elif move == "snapshot":  # kept as stored, so that each replay decodes it afresh
            self.snapshot = self.app.mapper.to_stored_event(Execution.Snapshot.take(self.execution))
        else:
            self.act_as(move)

    def next_turn(self) -> int:
        self.turn += 1
        return self.turn

    def act_as(self, actor: str) -> None:
        """Who acts is not state: it changes nothing and records nothing."""
        before = state_of(self.execution, copied=True)
        self.execution.act_as(actor, "correlation-1")
        self.actor = actor
        assert state_of(self.execution) == before

    def save(self) -> None:
        """Store the pending events: the stored chain verifies and reloads as the live state."""
        self.app.save(self.execution)
        self.saved = len(self.events)
        originator_id = str(self.execution.id)
        rows = [
            (originator_id, i, s.originator_version, s.topic, s.state)
            for i, s in enumerate(self.app.recorder.select_events(self.execution.id))
        ]
        verdict = verify_stored(rows, originator_id)
        assert verdict.ok, verdict.broken
        assert verdict.events == len(self.events)
        assert verdict.head is not None
        assert verdict.head.hash == self.execution.chain_head
        reloaded: Execution = self.app.repository.get(self.execution.id)
        assert state_of(reloaded) == state_of(self.execution)

    # -- running one command -----------------------------------------------------------------

    def run(self, action: Action) -> None:
        """Allowed: exactly one event of its type and the model's effect. Else: nothing."""
        before, pending = state_of(self.execution, copied=True), len(self.execution.pending_events)
        if action.allowed and (not self.status.is_terminal or action.name in AFTER_THE_END):
            action.command(self.execution)
            action.effect()
            [event] = self.execution.pending_events[pending:]
            assert type(event) is action.records
            self.events.append(event)
            self.actors.append(self.actor)
            ExecutionMachine.recorded[type(event).__name__] += 1
            return
        with pytest.raises(ExecutionRuleError) as refused:
            action.command(self.execution)
        if action.allowed:  # refused only because the execution has finished
            assert isinstance(refused.value, ExecutionFinishedError), refused.value
            ExecutionMachine.refused["because finished"] += 1
        assert state_of(self.execution) == before
        assert len(self.execution.pending_events) == pending
        ExecutionMachine.refused[action.name] += 1

    # -- the commands, each with whether the model allows it and what it then changes ------

    def actions(self) -> list[Action]:
        """Every command, on every step and a missing one, at every attempt of interest."""
        if self.cached_actions[0] != len(self.events):  # the model changes with each event
            self.cached_actions = (len(self.events), self.all_actions())
        return self.cached_actions[1]

    def all_actions(self) -> list[Action]:
        actions = [self.finishing(kind) for kind in FINISHING]
        actions += [
            Action(
                "request_cancellation",
                ("bob", "too slow"),
                lambda e: e.request_cancellation("bob", "too slow"),
                self.cancellation is None,
                Execution.ExecutionCancellationRequested,
                self.model_cancellation_requested,
            ),
            Action(
                "take_over",
                ("worker-1", "worker-2"),
                lambda e: e.take_over("worker-1", "worker-2"),
                True,
                Execution.ExecutionTakenOver,
            ),
            Action(
                "resume",
                ("bob",),
                lambda e: e.resume("bob", "the outage is over"),
                self.status in RESUMABLE,
                Execution.ExecutionResumed,
                self.resumed,
            ),
            Action(
                "record_fork",
                ("triage",),
                lambda e: e.record_fork(self.parent, "data", {"triage": {"copied": 1}}),
                len(self.events) == 1,
                Execution.ExecutionForked,
                self.forked,
            ),
            Action(
                "receive_signal",
                (SIGNAL,),
                lambda e: e.receive_signal(SIGNAL, dict(PAYLOAD), "bob", ["user"]),
                True,
                Execution.SignalReceived,
                self.signal_received,
            ),
        ]
        for step_id in (*STEPS, GHOST):
            step = self.steps.get(step_id)
            actions += [self.skip(step_id, step), self.cancel_step(step_id, step)]
            for offset in OFFSETS if step is not None else (0,):
                attempt = (step.attempt if step is not None else 1) + offset
                actions += self.attempt_actions(step_id, step, attempt)
        return sorted(actions, key=lambda a: RANK[a.name])

    def on_current_attempts(self) -> list[Action]:
        """The commands about the execution, and those about each step under way (else each
        step) at its current attempt: what is refused here is refused for what it is doing."""
        under_way = [s for s, step in self.steps.items() if step.status in UNDER_WAY]
        steps = under_way or list(self.steps)
        return [
            a
            for a in self.actions()
            if a.name in NO_STEP
            or (
                a.name not in FINISHING
                and a.args[0] in steps
                and (len(a.args) == 1 or a.args[1] == self.steps[a.args[0]].attempt)
            )
        ]

    def finishing(self, kind: str) -> Action:
        commands: dict[str, tuple[Callable[[Execution], None], type, ExecutionStatus]] = {
            "complete": (lambda e: e.complete({"n": 1}), Execution.ExecutionCompleted, COMPLETED),
            "fail": (lambda e: e.fail({"type": "X"}), Execution.ExecutionFailed, FAILED),
            "cancel": (lambda e: e.cancel("bob", "stop"), Execution.ExecutionCancelled, CANCELLED),
            "time_out": (lambda e: e.time_out(30.0), Execution.ExecutionTimedOut, TIMED_OUT),
        }
        command, event, status = commands[kind]

        def effect() -> None:
            self.status = status
            if kind == "complete":
                self.output = {"n": 1}
            elif kind == "fail":
                self.error = {"type": "X"}

        return Action(kind, (), command, True, event, effect)

    def model_cancellation_requested(self) -> None:
        self.cancellation = {"by": "bob", "reason": "too slow"}

    def skip(self, step_id: str, step: StepState | None) -> Action:
        return Action(
            "skip_step",
            (step_id,),
            lambda e: e.skip_step(step_id, "dead path"),
            step is not None and not step.status.is_done,
            Execution.StepSkipped,
            lambda: self.ended(step_id, status=StepStatus.SKIPPED, skip_reason="dead path"),
        )

    def cancel_step(self, step_id: str, step: StepState | None) -> Action:
        return Action(
            "cancel_step",
            (step_id,),
            lambda e: e.cancel_step(step_id, "cancelled"),
            step is not None and step.status is not StepStatus.PENDING and not step.status.is_done,
            Execution.StepCancelled,
            lambda: self.ended(step_id, status=StepStatus.CANCELLED),
        )

    def attempt_actions(self, step_id: str, step: StepState | None, n: int) -> list[Action]:
        """The commands about attempt `n` of a step."""
        at = step is not None and step.attempt == n
        running = at and step is not None and step.status is StepStatus.RUNNING
        agent_on = running and step is not None and step.agent_started
        working = agent_on and step is not None and not step.agent_finished
        ending = at and step is not None and step.status in (StepStatus.RUNNING, TIMED_OUT_STEP)
        pieces = step.output_pieces if step is not None else 0
        awaiting = step is not None and step.awaiting is not None
        actions = [
            Action(
                "schedule_step",
                (step_id, n),
                lambda e: e.schedule_step(step_id, n),
                step is not None
                and step.status in (StepStatus.PENDING, StepStatus.RETRYING)
                and n > step.attempt,
                Execution.StepScheduled,
                lambda: self.scheduled(step_id, n),
            ),
            Action(
                "start_step",
                (step_id, n),
                lambda e: e.start_step(step_id, n),
                at and step is not None and step.status is StepStatus.SCHEDULED,
                Execution.StepStarted,
                lambda: self.change(step_id, status=StepStatus.RUNNING),
            ),
            Action(
                "complete_step",
                (step_id, n),
                lambda e: e.complete_step(step_id, n, {"from": step_id}),
                running,
                Execution.StepCompleted,
                lambda: self.completed(step_id, {"from": step_id}),
            ),
            Action(
                "fail_step",
                (step_id, n),
                lambda e: e.fail_step(step_id, n, {"type": "Boom"}),
                ending,
                Execution.StepFailed,
                lambda: self.ended(step_id, status=StepStatus.FAILED, error={"type": "Boom"}),
            ),
            Action(
                "retry_step",
                (step_id, n),
                lambda e: e.retry_step(step_id, n, {"type": "Again"}, 1.5, LATER),
                ending,
                Execution.StepRetrying,
                lambda: self.ended(
                    step_id, status=StepStatus.RETRYING, error={"type": "Again"}, due_at=LATER
                ),
            ),
            Action(
                "time_out_step",
                (step_id, n),
                lambda e: e.time_out_step(step_id, n, 5.0),
                running,
                Execution.StepTimedOut,
                lambda: self.ended(step_id, status=StepStatus.TIMED_OUT),
            ),
            Action(
                "start_agent",
                (step_id, n),
                lambda e: e.start_agent(step_id, n, "triage", {"q": 1}),
                running and not agent_on,
                Execution.AgentStarted,
                lambda: self.change(step_id, agent_started=True),
            ),
            Action(
                "record_thinking",
                (step_id, n),
                lambda e: e.record_thinking(step_id, n, "hmm"),
                working,
                Execution.AgentThinking,
            ),
            Action(
                "await_signal",
                (step_id, n),
                lambda e: e.await_signal(step_id, n, SIGNAL, LATER),
                running and step is not None and not step.agent_started and not awaiting,
                Execution.SignalAwaited,
                lambda: self.awaited(step_id),
            ),
            Action(
                "take_signal_for",
                (step_id, n),
                lambda e: e.take_signal_for(step_id, n),
                running and awaiting and any(s["signal"] == SIGNAL for s in self.inbox),
                Execution.StepCompleted,
                lambda: self.completed(step_id, dict(PAYLOAD)),
            ),
            Action(
                "record_output_delta",
                (step_id, n),
                # the next piece in order; an out-of-order index is refused like any other
                lambda e: e.record_output_delta(step_id, n, "piece", pieces),
                working,
                Execution.AgentOutputDelta,
                lambda: self.change(step_id, output_pieces=pieces + 1),
            ),
            Action(
                "complete_llm_call",
                (step_id, n),
                lambda e: e.complete_llm_call(step_id, n, "gpt-x", 10, 5, 3.5, 0.0001),
                working,
                Execution.LlmCallCompleted,
            ),
            Action(
                "complete_agent",
                (step_id, n),
                lambda e: e.complete_agent(step_id, n, "answer", 12.0),
                working,
                Execution.AgentCompleted,
                lambda: self.change(step_id, agent_finished=True),
            ),
            Action(
                "fail_agent",
                (step_id, n),
                lambda e: e.fail_agent(step_id, n, {"type": "AgentError"}, 12.0),
                working,
                Execution.AgentFailed,
                lambda: self.change(step_id, agent_finished=True),
            ),
            Action(
                "evaluate_gateway",
                (step_id, n),
                lambda e: e.evaluate_gateway(step_id, n, 0, ["data"], "first true"),
                running,
                Execution.GatewayEvaluated,
            ),
            Action(
                "start_timer",
                (step_id, n),
                lambda e: e.start_timer(step_id, n, 60.0, LATER),
                running,
                Execution.TimerStarted,
                lambda: self.change(step_id, due_at=LATER),
            ),
            Action(
                "fire_timer",
                (step_id, n),
                lambda e: e.fire_timer(step_id, n),
                running and step is not None and step.due_at is not None,
                Execution.TimerFired,
                lambda: self.change(step_id, due_at=None, timer_fired=True),
            ),
        ]
        for call_id in CALLS:
            actions += self.tool_actions(step_id, step, n, call_id, running, working)
        return actions

    def tool_actions(
        self,
        step_id: str,
        step: StepState | None,
        n: int,
        call_id: str,
        running: bool,
        working: bool,
    ) -> list[Action]:
        """Starting and finishing one tool call of attempt `n`."""
        known = step is not None and (
            call_id in step.open_tool_calls or call_id in step.finished_tool_calls
        )
        is_open = step is not None and call_id in step.open_tool_calls
        tool = f"tool-{call_id}"
        return [
            Action(
                "start_tool",
                (step_id, n, call_id),
                lambda e: e.start_tool(step_id, n, call_id, tool, {"x": 1}),
                working and not known,
                Execution.ToolExecuting,
                lambda: self.steps[step_id].open_tool_calls.__setitem__(call_id, tool),
            ),
            Action(
                "complete_tool",
                (step_id, n, call_id),
                lambda e: e.complete_tool(step_id, n, call_id, [1, 2], 3.0),
                running and is_open,
                Execution.ToolCompleted,
                lambda: self.tool_finished(step_id, call_id),
            ),
            Action(
                "fail_tool",
                (step_id, n, call_id),
                lambda e: e.fail_tool(step_id, n, call_id, {"type": "ToolError"}, 3.0),
                running and is_open,
                Execution.ToolFailed,
                lambda: self.tool_finished(step_id, call_id),
            ),
        ]

    def scheduled(self, step_id: str, attempt: int) -> None:
        """A new attempt starts afresh: no agent, no tool call open, no timer."""
        self.change(
            step_id,
            status=StepStatus.SCHEDULED,
            attempt=attempt,
            agent_started=False,
            agent_finished=False,
            open_tool_calls={},
            due_at=None,
            timer_fired=False,
            output_pieces=0,
            awaiting=None,
        )
        self.status = ExecutionStatus.RUNNING

    def tool_finished(self, step_id: str, call_id: str) -> None:
        step = self.steps[step_id]
        del step.open_tool_calls[call_id]
        step.finished_tool_calls.append(call_id)

    def resumed(self) -> None:
        """Completed, never started and branch-not-taken steps stay; the rest start afresh."""
        self.status = ExecutionStatus.PENDING
        self.output = self.error = self.cancellation = None
        for step_id, step in list(self.steps.items()):
            stays = step.status in (StepStatus.COMPLETED, StepStatus.PENDING) or (
                step.status is StepStatus.SKIPPED
                and step.skip_reason not in ("dependency_failed", "error")
            )
            if not stays:
                self.steps[step_id] = StepState(
                    step_id,
                    attempt=step.attempt,
                    attempts_before=step.attempt,
                    finished_tool_calls=step.finished_tool_calls,
                )

    def forked(self) -> None:
        self.change("triage", status=StepStatus.COMPLETED, output={"copied": 1}, copied=True)

    def signal_received(self) -> None:
        self.inbox.append(
            {"signal": SIGNAL, "payload": dict(PAYLOAD), "version": len(self.events) + 1}
        )

    def awaited(self, step_id: str) -> None:
        self.change(step_id, awaiting=SIGNAL, due_at=LATER)
        self.settle()

    def completed(self, step_id: str, output: Any) -> None:
        """A step's end with its output; a waiting step's output is the oldest signal of its
        name, which leaves the inbox."""
        step = self.steps[step_id]
        if step.awaiting is not None:
            taken = next((s for s in self.inbox if s["signal"] == step.awaiting), None)
            if taken is not None:  # a plain complete_step on a wait takes one, if there is one
                self.inbox.remove(taken)
            self.change(step_id, due_at=None)
        self.ended(step_id, status=StepStatus.COMPLETED, output=output)

    def ended(self, step_id: str, **changes: Any) -> None:
        """An attempt moved out of running: it waits for nothing now."""
        self.change(step_id, awaiting=None, **changes)
        self.settle()

    def settle(self) -> None:
        """Waiting when every attempt under way waits for a signal (and one does)."""
        if self.status not in (ExecutionStatus.RUNNING, ExecutionStatus.WAITING):
            return
        under_way = [st for st in self.steps.values() if st.status in UNDER_WAY]
        waits = [st for st in under_way if st.status is StepStatus.RUNNING and st.awaiting]
        waiting = bool(waits) and len(waits) == len(under_way)
        self.status = ExecutionStatus.WAITING if waiting else ExecutionStatus.RUNNING

    def change(self, step_id: str, **changes: Any) -> None:
        step = self.steps[step_id]
        for name, value in changes.items():
            setattr(step, name, value)

    # -- what must hold after every step -------------------------------------------------------

    @invariant()
    def the_aggregate_is_what_the_model_says(self) -> None:
        execution = self.execution
        assert execution.status is self.status
        assert execution.steps == self.steps
        assert execution.inbox == self.inbox
        assert (execution.output, execution.error) == (self.output, self.error)
        assert execution.cancellation == self.cancellation
        assert execution.cancellation_requested is (self.cancellation is not None)

    @invariant()
    def the_version_counts_the_events_in_order(self) -> None:
        assert self.execution.version == len(self.events)
        assert [e.originator_version for e in self.events] == list(range(1, len(self.events) + 1))
        assert {e.originator_id for e in self.events} == {self.execution.id}
        assert self.execution.pending_events == self.events[self.saved :]

    @invariant()
    def each_event_links_to_its_predecessor_and_hashes_to_what_it_says(self) -> None:
        checked = self.hashes_checked
        previous = self.events[checked - 1].hash if checked else GENESIS
        for event in self.events[checked:]:
            assert event.previous_hash == previous
            assert event.hash == recorded_hash(get_topic(type(event)), vars(event))
            previous = event.hash
        self.hashes_checked = len(self.events)
        assert self.execution.chain_head == previous

    @invariant()
    def every_event_names_its_owner_and_who_caused_it(self) -> None:
        assert all(e.user_id == USER for e in self.events)
        assert [e.caused_by for e in self.events] == self.actors

    @invariant()
    def a_finished_execution_ends_with_its_one_terminal_event(self) -> None:
        resumes = [
            i for i, e in enumerate(self.events) if isinstance(e, Execution.ExecutionResumed)
        ]
        since = resumes[-1] + 1 if resumes else 0  # a resume starts the execution's life anew
        for resume in resumes:  # only a finished execution is resumed
            assert isinstance(self.events[resume - 1], TERMINAL_EVENTS)
        terminal = [
            i for i, e in enumerate(self.events) if i >= since and isinstance(e, TERMINAL_EVENTS)
        ]
        assert terminal == ([len(self.events) - 1] if self.status.is_terminal else [])
        requests = [
            e
            for e in self.events[since:]
            if isinstance(e, Execution.ExecutionCancellationRequested)
        ]
        assert len(requests) == (0 if self.cancellation is None else 1)

    @invariant()
    def attempts_and_tool_calls_add_up(self) -> None:
        latest = dict.fromkeys(STEPS, 0)
        for event in self.events:
            if isinstance(event, Execution.StepScheduled):
                assert event.attempt > latest[event.step_id]  # attempts only grow
                latest[event.step_id] = event.attempt
            elif isinstance(event, StepEvent):
                assert event.attempt == latest[event.step_id]  # always the latest attempt
        if not any(latest.values()):  # only a scheduled step sets the execution running
            assert self.execution.status in (ExecutionStatus.PENDING, *TERMINAL_STATUSES)
        for step_id, step in self.execution.steps.items():
            assert step.attempt == latest[step_id]
            assert step.attempt >= 1 if step.status in UNDER_WAY else True
            assert (
                step.attempt == step.attempts_before if step.status is StepStatus.PENDING else True
            )
            assert not set(step.open_tool_calls) & set(step.finished_tool_calls)
            assert len(set(step.finished_tool_calls)) == len(step.finished_tool_calls)
            assert step.agent_started or not (step.open_tool_calls or step.agent_finished)

    @invariant()
    def replaying_the_events_gives_the_live_state(self) -> None:
        live = state_of(self.execution)
        assert state_of(replay(self.events)) == live
        if self.snapshot is not None:
            snapshot: Any = self.app.mapper.to_domain_event(self.snapshot)
            later = self.events[snapshot.originator_version :]
            assert state_of(replay(later, snapshot.mutate(None))) == live


SETTINGS = settings(
    max_examples=80,
    stateful_step_count=50,
    derandomize=True,  # the same sequences on every run
    # no shrinking: it can take minutes here, past the suite's per-test timeout; a failure
    # prints its (at most 50) steps, each allowed or any command with what it was
    phases=[Phase.explicit, Phase.generate],
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_random_command_sequences_keep_every_rule_of_the_execution() -> None:
    ExecutionMachine.recorded.clear()
    ExecutionMachine.refused.clear()

    run_state_machine_as_test(ExecutionMachine, settings=SETTINGS)

    # not vacuous: every event type was recorded, and every kind of command also refused
    event_types = {topic.rpartition(".")[2] for topic in topics_by_type().values()}
    assert event_types - set(ExecutionMachine.recorded) == set()
    step_commands = set(ORDER) - set(NO_STEP) - set(FINISHING)  # refused while it runs
    assert step_commands - set(ExecutionMachine.refused) == set()
    assert ExecutionMachine.refused["because finished"] > 0
