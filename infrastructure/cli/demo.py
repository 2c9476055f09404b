"""`agent-ledger demo`: start the sample process and watch it live over the WebSocket."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import typer

from agent_ledger.infrastructure.auth.tokens import issue_token
from agent_ledger.infrastructure.cli.preflight import require_jwt_secret
from agent_ledger.infrastructure.settings import Settings

STEP_ICONS = {
    "execution_started": "▶",
    "step_started": "•",
    "agent_started": "  ◆",
    "agent_thinking": "    …",
    "llm_call_completed": "    ≡",
    "signal_awaited": "  ⏸",
    "signal_received": "  ✉",
    "tool_executing": "    ⚙",
    "tool_completed": "    ✓",
    "tool_failed": "    ✗",
    "agent_completed": "  ◆",
    "agent_failed": "  ✗",
    "step_completed": "•",
    "step_retrying": "↻",
    "step_failed": "✗",
    "execution_completed": "■",
    "execution_failed": "✗",
    "execution_cancelled": "■",
}
APPROVAL = {"approved": True, "comment": "approved by agent-ledger demo --approve"}
TERMINAL = {"execution_completed", "execution_failed", "execution_cancelled", "execution_timed_out"}


def demo(
    url: Annotated[
        str, typer.Option(help="base URL of a running server")
    ] = "http://127.0.0.1:8000",
    question: Annotated[
        str, typer.Option(help="the question to ask")
    ] = "Where can we cut our LLM spend?",
    sub: Annotated[str, typer.Option(help="user to run as")] = "demo-user",
    process: Annotated[
        str,
        typer.Option(
            help="the process to run: cost_optimization_llm for the model agent "
            "(registered when a model provider is configured)"
        ),
    ] = "cost_optimization",
    approve: Annotated[
        bool,
        typer.Option(
            help="run cost_optimization_approved and approve its recommendation when it waits "
            "(with --process, answer that process's `approval` signal)"
        ),
    ] = False,
) -> None:
    """Run the sample process against a running server, printing its events live."""
    settings = Settings()
    token = issue_token(require_jwt_secret(settings), sub)
    if approve and process == "cost_optimization":
        process = "cost_optimization_approved"
    raise typer.Exit(run_demo(url, question, token, process, approve))


def describe(message: dict[str, Any]) -> str:
    """One readable line per event."""
    icon = STEP_ICONS.get(message["type"], "  ")
    return f"{message['position']:>7}  {icon} {message['type']:<22} {_detail(message)}"


def _detail(message: dict[str, Any]) -> str:
    data = message["data"]
    match message["type"]:
        case "execution_started":
            return f"{data['process_name']} v{data['process_version']}"
        case "step_scheduled" | "step_started" | "step_completed":
            return f"step {data['step_id']} (attempt {data['attempt']})"
        case "agent_started":
            return f"agent {data['agent']}"
        case "agent_thinking":
            return str(data["message"])
        case "signal_awaited":
            return f"step {data['step_id']} waits for signal {data['signal']!r}"
        case "signal_received":
            return f"{data['signal']!r} from {data['actor']}: {json.dumps(data['payload'])[:80]}"
        case "llm_call_completed":
            cost = "cost unknown" if data["cost_usd"] is None else f"${data['cost_usd']:.6f}"
            return (
                f"{data['model']}: {data['prompt_tokens']} in, {data['completion_tokens']} out, "
                f"{data['duration_ms']:.0f} ms, {cost}"
            )
        case "tool_executing":
            return f"{data['tool']}({json.dumps(data['args'])[:80]})"
        case "tool_completed" | "agent_completed":
            return f"{data.get('tool', '')} in {data['duration_ms']:.1f} ms".strip()
        case "step_retrying":
            return f"step {data['step_id']} in {data['delay_seconds']}s: {data['error']}"
        case "execution_failed" | "step_failed" | "agent_failed" | "tool_failed":
            return str(data["error"])
        case _:
            return ""


def run_demo(
    url: str,
    question: str,
    token: str,
    process: str = "cost_optimization",
    approve: bool = False,
) -> int:
    """Returns the exit status: 0 when the execution completed."""
    # imported here, as in _run: every other command starts without the HTTP clients
    import httpx
    from websockets.exceptions import WebSocketException

    try:
        return _run(url, question, token, process, approve)
    except (httpx.ConnectError, httpx.ConnectTimeout, ConnectionRefusedError):
        print(f"agent-ledger: no server at {url}: start one with `make run`", file=sys.stderr)
    except (httpx.UnsupportedProtocol, httpx.InvalidURL):
        print(
            f"agent-ledger: {url} is not a server URL: pass e.g. --url http://127.0.0.1:8000",
            file=sys.stderr,
        )
    except (httpx.TransportError, OSError, WebSocketException) as error:
        print(f"agent-ledger: lost the server at {url}: {error}", file=sys.stderr)
    return 1


def _run(url: str, question: str, token: str, process: str, approve: bool) -> int:
    # the SDK is a separate distribution (clients/python, installed by `make install`); an
    # install without it (the Docker image) runs the same demo on httpx and websockets alone
    if importlib.util.find_spec("agent_ledger_client") is None:
        return _run_plain(url, question, token, process, approve)
    return _run_sdk(url, question, token, process, approve)


def _run_sdk(url: str, question: str, token: str, process: str, approve: bool) -> int:
    """Through the Python SDK (clients/python): its tail resumes by itself after a drop."""
    from agent_ledger_client import ApiError, AuthenticationError, Client, StreamClosedError

    with Client(url, token) as client:
        try:
            started = client.start(process, {"question": question})
        except AuthenticationError:
            return _refused_token(url)
        except ApiError as error:
            print(f"could not start: {error.status} {error.text}")
            return 1
        print(f"execution {started.id} started; following it live\n")

        def answer(signal: str) -> None:
            if not approve:
                return _how_to_answer(url, f"/v1/executions/{started.id}/signals/{signal}", signal)
            try:
                client.signal(started.id, signal, APPROVAL)
            except ApiError as error:
                print(f"could not send {signal!r}: {error.status} {error.text}")

        events = client.stream(after=0, execution_id=started.id, max_reconnects=3)
        try:
            final = _follow((e.model_dump(mode="json") for e in events), answer)
        except StreamClosedError as error:
            print(f"agent-ledger: lost the server at {url}: {error}", file=sys.stderr)
            return 1
        finally:
            events.close()
        return _report(final)


def _run_plain(url: str, question: str, token: str, process: str, approve: bool) -> int:
    """With httpx and websockets alone, when the SDK is not installed."""
    import httpx
    from websockets.sync.client import connect

    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        response = client.post(
            "/v1/executions", json={"process": process, "input": {"question": question}}
        )
        if response.status_code == 401:
            return _refused_token(url)
        if response.status_code >= 400:
            print(f"could not start: {response.status_code} {response.text}")
            return 1
        started = response.json()
        print(f"execution {started['id']} started; following it live\n")
        ws_url = url.replace("http", "ws", 1) + f"/v1/stream?after=0&execution_id={started['id']}"

        def answer(signal: str) -> None:
            path = f"/v1/executions/{started['id']}/signals/{signal}"
            if not approve:
                return _how_to_answer(url, path, signal)
            response = client.post(path, json={"payload": APPROVAL})
            if response.status_code != 202:
                print(f"could not send {signal!r}: {response.status_code} {response.text}")

        with connect(ws_url, additional_headers=headers) as websocket:
            final = _follow((json.loads(raw) for raw in websocket), answer)
        return _report(final)


def _follow(messages: Iterator[dict[str, Any]], answer: Callable[[str], None]) -> dict[str, Any]:
    """Print each event until the execution ends; its last event."""
    streaming = False  # in the middle of a streamed answer's line
    for message in messages:
        if message["type"] == "agent_output_delta":
            if not streaming:
                print(f"{'':>7}    » ", end="")
            print(message["data"]["text"], end="", flush=True)
            streaming = True
            continue
        if streaming:
            print()
            streaming = False
        print(describe(message))
        if message["type"] == "signal_awaited":
            answer(message["data"]["signal"])
        if message["type"] in TERMINAL:
            return message
    return {}


def _report(final: dict[str, Any]) -> int:
    """Print the outcome; the exit status."""
    if final.get("type") != "execution_completed":
        return 1
    output = final["data"]["output"] or {}
    approval = output.get("approval") if isinstance(output, dict) else None
    if isinstance(approval, dict):
        verdict = "approved" if approval.get("approved") else "rejected"
        print(f"\nThe recommendation was {verdict}.")
    if isinstance(output, str):  # a model's answer: already printed as it streamed
        return 0
    print("\n" + str(output.get("answer", json.dumps(output, indent=2))))
    savings = output.get("projected_monthly_savings_usd")
    if savings is not None:
        print(f"\nProjected monthly savings: ${savings:,.2f}")
    return 0


def _refused_token(url: str) -> int:
    print(
        f"agent-ledger: the server at {url} refused the demo's token: run the demo with "
        "the server's AGENT_LEDGER_JWT_SECRET (or AGENT_LEDGER_DATA_DIR)",
        file=sys.stderr,
    )
    return 1


def _how_to_answer(url: str, path: str, signal: str) -> None:
    """Say how a person approves."""
    print(
        f"\n  waiting for {signal!r}: approve in the dashboard, or\n"
        f"  curl -X POST {url}{path} -H 'Authorization: Bearer $TOKEN' "
        "-H 'Content-Type: application/json' "
        '-d \'{"payload": {"approved": true, "comment": "go"}}\'\n'
    )
