"""The agents API as a client sees it: listing and reading agents, declared tools
whose header values no answer shows, the admin's versioned agents, and tenants that
never see each other's agents.

The model is the fake upstream's `script` mode (`bench.fake_script`): the turn it
answers is the number of assistant messages in the request, so a test states the
whole conversation up front and reads what the model was sent from `last_request`.
The gateway (tests/agents/api/conftest.py) runs in-process on SQLite.
"""

from __future__ import annotations

from tests.support.agents import (
    ADMIN_HEADERS,
    AGENTS,
    CONFIRM,
    LITERAL,
    MODEL,
    SUMMARY_KEYS,
    TOKEN,
    TOKEN_ENV,
    ApiGateway,
    agent_body,
    assert_error,
)
from tests.support.app import AppFactory
from tests.support.auth import bearer, insert_key


# -- listing and reading ---------------------------------------------------------------
async def test_the_demo_default_lists_and_runs_the_shipped_examples(
    app_factory: AppFactory,
) -> None:
    async with app_factory() as (app, client):
        key = bearer((await insert_key(app, tenant="team-a"))[0])
        listed = (await client.get(AGENTS, headers=key)).json()
        assert listed["object"] == "list"
        assert [agent["id"] for agent in listed["data"]] == ["assistant", "calculator"]
        for agent in listed["data"]:
            assert SUMMARY_KEYS <= set(agent)
            assert (agent["object"], agent["status"], agent["version"]) == ("agent", "active", 1)
            assert agent["model"] == "demo" and "calculator" in agent["tools"]
        detail = (await client.get(f"{AGENTS}/calculator", headers=key)).json()
        assert {k: detail[k] for k in SUMMARY_KEYS} == {
            k: listed["data"][1][k] for k in SUMMARY_KEYS
        }
        answered = await client.post(
            f"{AGENTS}/calculator/runs", json={"input": "What is 6*7?"}, headers=key
        )
        run = answered.json()
        assert (run["status"], run["stop_reason"]) == ("completed", "final"), run
        assert "42" in run["output"] and run["usage"]["tool_calls"] >= 1
        health = (await client.get("/health")).json()
        assert health["agents"] == {"total": 2, "active": 2, "runs_active": 0}


async def test_the_list_and_detail_show_config_agents_and_never_a_header_value(
    gateway: ApiGateway,
) -> None:
    listed = await gateway.client.get(AGENTS, headers=gateway.a)
    assert listed.status_code == 200
    body = listed.json()
    assert body["object"] == "list"
    assert [a["id"] for a in body["data"]] == ["asker", "crm", "dormant", "helper"]
    by_id = {agent["id"]: agent for agent in body["data"]}
    assert {k: by_id["helper"][k] for k in SUMMARY_KEYS} == {
        "id": "helper",
        "object": "agent",
        "name": "Helper",
        "description": "Does arithmetic with the calculator.",
        "status": "active",
        "model": "primary",
        "tools": ["calculator"],
        "version": 1,
    }
    assert by_id["dormant"]["status"] == "disabled" and by_id["dormant"]["model"] == "fast"
    assert by_id["asker"]["tools"] == ["confirm"] and by_id["crm"]["tools"] == ["lookup"]
    detail = await gateway.client.get(f"{AGENTS}/crm", headers=gateway.b)
    assert detail.status_code == 200
    (tool,) = detail.json()["tool_definitions"]
    assert set(tool["headers"]) == {"Authorization", "X-Team"}
    for shown in (listed.text, detail.text):
        assert LITERAL not in shown and TOKEN not in shown
    assert_error(
        await gateway.client.get(f"{AGENTS}/nobody", headers=gateway.a),
        404,
        code="agent_not_found",
    )
    assert_error(await gateway.client.get(AGENTS), 401)


async def test_a_declared_tool_sends_its_headers_and_no_answer_shows_them(
    gateway: ApiGateway,
) -> None:
    """The file's agent, and the admin's copy of it, edited: each run sends exactly the
    headers its definition declares (the secret read from the environment)."""
    gateway.upstream.set_behaviour(
        MODEL,
        "script",
        turns=[
            {"tool_calls": [{"name": "lookup", "arguments": {"item": "abc"}}]},
            {"content": "Found it."},
        ],
    )
    file_run = await gateway.run("crm", gateway.a, input="look up abc")
    assert file_run.json()["status"] == "completed", file_run.text
    crm = (await gateway.client.get(f"{AGENTS}/crm", headers=ADMIN_HEADERS)).json()
    declared = {"Authorization": f"Bearer ${{{TOKEN_ENV}}}", "X-Team": LITERAL}
    tool = {**crm["tool_definitions"][0], "headers": declared}  # the answer had them masked
    body = agent_body("crm2", tools=[tool], tenant="team-a")
    created = await gateway.client.post(AGENTS, json=body, headers=ADMIN_HEADERS)
    assert created.status_code == 201, created.text
    first = await gateway.run("crm2", gateway.a, input="look up abc")
    assert first.json()["status"] == "completed", first.text
    edited = await gateway.client.patch(
        f"{AGENTS}/crm2?tenant=team-a",
        json={"tools": [{**tool, "headers": {**tool["headers"], "X-Team": "edited-value"}}]},
        headers=ADMIN_HEADERS,
    )
    assert edited.status_code == 200 and edited.json()["version"] == 2
    admin_run = await gateway.run("crm2", gateway.a, input="look up abc")
    assert admin_run.json()["status"] == "completed", admin_run.text
    sent = [
        (seen.headers["authorization"], seen.headers["x-team"]) for seen in gateway.echo.requests
    ]
    assert sent == [
        (f"Bearer {TOKEN}", LITERAL),  # the file's agent
        (f"Bearer {TOKEN}", LITERAL),  # the admin's, version 1
        (f"Bearer {TOKEN}", "edited-value"),  # version 2, on the same instance
    ]
    events = await gateway.client.get(
        f"/api/v1/runs/{admin_run.json()['id']}/events", headers=gateway.a
    )
    answers = [created.text, edited.text, file_run.text, first.text, admin_run.text, events.text]
    for shown in answers:
        assert TOKEN not in shown and LITERAL not in shown and "edited-value" not in shown


# -- the admin's agents -----------------------------------------------------------------
async def test_admin_edits_make_versions_and_a_run_keeps_the_one_it_started_with(
    gateway: ApiGateway,
) -> None:
    client, upstream = gateway.client, gateway.upstream
    confirm = {"type": "client", "name": "confirm", "parameters": {"type": "object"}}
    body = agent_body("ops", instructions="version one", tools=[confirm], tenant="team-a")
    created = await client.post(AGENTS, json=body, headers=ADMIN_HEADERS)
    assert created.status_code == 201, created.text
    assert (created.json()["version"], created.json()["shared"]) == (1, False)
    upstream.set_behaviour(MODEL, "script", turns=[CONFIRM, {"content": "Done."}])
    paused = (await gateway.run("ops", gateway.a, input="go")).json()
    assert (paused["status"], paused["agent_version"]) == ("requires_action", 1), paused
    # Edited while the run waits for its client: the run goes on with version 1.
    edited = await client.patch(
        f"{AGENTS}/ops?tenant=team-a", json={"instructions": "version two"}, headers=ADMIN_HEADERS
    )
    assert edited.status_code == 200, edited.text
    assert (edited.json()["version"], edited.json()["instructions"]) == (2, "version two")
    (call,) = paused["required_action"]["tool_calls"]
    answered = await client.post(
        f"/api/v1/runs/{paused['id']}/tool_outputs",
        json={"tool_outputs": [{"tool_call_id": call["id"], "output": "yes"}]},
        headers=gateway.a,
    )
    assert answered.status_code == 200, answered.text
    resumed = await gateway.finished(paused["id"], gateway.a)
    assert (resumed["status"], resumed["agent_version"]) == ("completed", 1), resumed
    assert gateway.sent()[0] == {"role": "system", "content": "version one"}
    # The next run uses version 2, and says so.
    upstream.set_behaviour(MODEL, "script", turns=[{"content": "Hi."}])
    second = (await gateway.run("ops", gateway.a, input="hello")).json()
    assert (second["status"], second["agent_version"]) == ("completed", 2), second
    assert gateway.sent()[0] == {"role": "system", "content": "version two"}
    third = await client.patch(
        f"{AGENTS}/ops?tenant=team-a", json={"description": "d"}, headers=ADMIN_HEADERS
    )
    assert third.json()["version"] == 3
    got = (await client.get(f"{AGENTS}/ops", headers=gateway.a)).json()
    assert (got["version"], got["instructions"], got["description"]) == (3, "version two", "d")
    # Deleted: gone for reads, edits, runs and a second delete; re-created, its
    # versions go on (no two definitions ever share a version number).
    deleted = await client.delete(f"{AGENTS}/ops?tenant=team-a", headers=ADMIN_HEADERS)
    assert deleted.json() == {"id": "ops", "object": "agent.deleted", "deleted": True}
    for gone in (
        await client.get(f"{AGENTS}/ops", headers=gateway.a),
        await client.patch(f"{AGENTS}/ops?tenant=team-a", json={}, headers=ADMIN_HEADERS),
        await client.delete(f"{AGENTS}/ops?tenant=team-a", headers=ADMIN_HEADERS),
        await gateway.run("ops", gateway.a, input="hello"),
    ):
        assert_error(gone, 404, code="agent_not_found")
    again = await client.post(AGENTS, json=body, headers=ADMIN_HEADERS)
    assert again.status_code == 201 and again.json()["version"] == 4
    assert_error(await client.post(AGENTS, json=body, headers=ADMIN_HEADERS), 409)


async def test_the_admin_endpoints_refuse_every_other_caller(gateway: ApiGateway) -> None:
    client = gateway.client
    body = agent_body("mine", tenant="team-a")
    for headers in (gateway.a, gateway.b):
        assert_error(await client.post(AGENTS, json=body, headers=headers), 403)
        assert_error(await client.patch(f"{AGENTS}/helper", json={}, headers=headers), 403)
        assert_error(await client.delete(f"{AGENTS}/helper", headers=headers), 403)
    for anonymous in (
        await client.post(AGENTS, json=body),
        await client.patch(f"{AGENTS}/helper", json={}),
        await client.delete(f"{AGENTS}/helper"),
    ):
        assert_error(anonymous, 401)
    listed = (await client.get(AGENTS, headers=gateway.a)).json()
    assert [a["id"] for a in listed["data"]] == ["asker", "crm", "dormant", "helper"]
    # The file's agents are the file's: the API cannot edit or delete them.
    assert_error(await client.patch(f"{AGENTS}/helper", json={}, headers=ADMIN_HEADERS), 404)
    assert_error(await client.delete(f"{AGENTS}/helper", headers=ADMIN_HEADERS), 404)


async def test_a_tenants_agent_is_its_own_and_a_shared_one_everyones(gateway: ApiGateway) -> None:
    client = gateway.client
    own = agent_body("private", tenant="team-a")
    assert (await client.post(AGENTS, json=own, headers=ADMIN_HEADERS)).status_code == 201
    shared = agent_body("common")
    made = await client.post(AGENTS, json=shared, headers=ADMIN_HEADERS)
    assert made.status_code == 201 and made.json()["shared"] is True
    ids_a = [a["id"] for a in (await client.get(AGENTS, headers=gateway.a)).json()["data"]]
    ids_b = [a["id"] for a in (await client.get(AGENTS, headers=gateway.b)).json()["data"]]
    assert ids_a == ["asker", "common", "crm", "dormant", "helper", "private"]
    assert ids_b == ["asker", "common", "crm", "dormant", "helper"]
    gateway.upstream.set_behaviour(MODEL, "script", turns=[{"content": "Hi."}])
    assert (await gateway.run("private", gateway.a, input="hi")).status_code == 200
    for refused in (
        await client.get(f"{AGENTS}/private", headers=gateway.b),
        await gateway.run("private", gateway.b, input="hi"),
        await client.patch(f"{AGENTS}/private?tenant=team-b", json={}, headers=ADMIN_HEADERS),
        await client.delete(f"{AGENTS}/private?tenant=team-b", headers=ADMIN_HEADERS),
        await client.delete(f"{AGENTS}/private", headers=ADMIN_HEADERS),  # not the shared one
    ):
        assert_error(refused, 404, code="agent_not_found")
    assert (await client.get(f"{AGENTS}/private", headers=gateway.a)).status_code == 200
    for key in (gateway.a, gateway.b):
        assert (await gateway.run("common", key, input="hi")).json()["status"] == "completed"


async def test_a_tenants_agent_shadows_a_shared_or_file_one_for_that_tenant_only(
    gateway: ApiGateway,
) -> None:
    client, upstream = gateway.client, gateway.upstream
    upstream.set_behaviour(MODEL, "script", turns=[{"content": "Hi."}])
    asked: list[str] = []

    async def seen_by(key: dict[str, str]) -> tuple[str, int, str]:
        agent = (await client.get(f"{AGENTS}/helper", headers=key)).json()
        listed = (await client.get(AGENTS, headers=key)).json()["data"]
        assert [a for a in listed if a["id"] == "helper"] == [
            {k: agent[k] for k in (*SUMMARY_KEYS, "shared")}
        ]
        asked.append(f"hi {len(asked)}")  # a new question each time: never a cache hit
        run = (await gateway.run("helper", key, input=asked[-1])).json()
        assert run["agent_version"] == agent["version"]
        assert gateway.sent()[-1] == {"role": "user", "content": asked[-1]}
        return agent["name"], agent["version"], gateway.sent()[0]["content"]

    file = ("Helper", 1, "You are the file's helper.")
    assert await seen_by(gateway.a) == file
    team_a = agent_body("helper", name="A's helper", instructions="A only.", tenant="team-a")
    assert (await client.post(AGENTS, json=team_a, headers=ADMIN_HEADERS)).status_code == 201
    assert await seen_by(gateway.a) == ("A's helper", 1, "A only.")
    assert await seen_by(gateway.b) == file
    everyone = agent_body("helper", name="Shared helper", instructions="Shared.")
    assert (await client.post(AGENTS, json=everyone, headers=ADMIN_HEADERS)).status_code == 201
    assert await seen_by(gateway.a) == ("A's helper", 1, "A only.")
    assert await seen_by(gateway.b) == ("Shared helper", 1, "Shared.")
    await client.delete(f"{AGENTS}/helper?tenant=team-a", headers=ADMIN_HEADERS)
    assert await seen_by(gateway.a) == ("Shared helper", 1, "Shared.")
    await client.delete(f"{AGENTS}/helper", headers=ADMIN_HEADERS)
    assert await seen_by(gateway.a) == file
