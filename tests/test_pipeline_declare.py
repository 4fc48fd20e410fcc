"""Declaring pipelines (issue 11), with no worker: the seeds' limits and bad references refused at
declaration with a clear error and nothing stored; references and conditions resolved as data;
the serialised form; stages frozen at enqueue; templating errors at run time (eager mode and
``run_until_empty`` on a SQLite file)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from conveyor import App, Delivery, Job, Message, Pipeline, Ref, Status, TemplateError, Timer
from conveyor.refs import Scope, encode, encode_cond, holds, resolve

Calls = list[tuple[str, Any]]


@pytest.fixture
def calls() -> Calls:
    """What the test tasks were called with, in order."""
    return []


@pytest.fixture
def tasks(app: App, calls: Calls) -> dict[str, Any]:
    @app.task(name="d.fetch")
    def fetch(url: str) -> dict[str, Any]:
        calls.append(("fetch", url))
        return {"url": url, "doc": {"title": "T", "tags": ["a", "b", "c"]}, "size": 3}

    @app.task(name="d.parse")
    def parse(html: Any, extra: Any = None) -> Any:
        calls.append(("parse", [html, extra]))
        return {"got": html, "extra": extra}

    @app.task(name="d.store")
    def store(*args: Any, **kwargs: Any) -> Any:
        calls.append(("store", [list(args), kwargs]))
        return [list(args), kwargs]

    return {"fetch": fetch, "parse": parse, "store": store}


def nothing_stored(app: App) -> None:
    assert app.jobs() == [], "a refused pipeline stored nothing"


# the seeds' limits -----------------------------------------------------------------------------------
def test_at_most_100_stages(app: App, tasks: dict[str, Any]) -> None:
    store = tasks["store"]
    app.pipeline(*[store.s(i) for i in range(100)])  # the limit itself is allowed
    with pytest.raises(ValueError, match=r"at most 100 stages, got 101"):
        app.pipeline(*[store.s(i) for i in range(101)]).delay()
    nothing_stored(app)


def test_an_empty_pipeline_is_refused(app: App) -> None:
    with pytest.raises(ValueError, match="at least one stage"):
        app.pipeline().delay()
    with pytest.raises(ValueError, match="at least one stage"):
        app.enqueue_pipeline({"stages": []})
    nothing_stored(app)


@pytest.mark.parametrize("retries", [11, -1, 2.0, True, "3"])
def test_max_retries_from_0_to_10(app: App, tasks: dict[str, Any], retries: Any) -> None:
    app.pipeline(tasks["store"].s(1), max_retries=10)
    with pytest.raises(ValueError, match="max_retries must be an int from 0 to 10"):
        app.pipeline(tasks["store"].s(1), max_retries=retries).delay()
    nothing_stored(app)


@pytest.mark.parametrize("timeout", [5, 9.99, 14400.01, 20000, 0, -1, float("nan"), float("inf"), "60", None])
def test_timeout_from_10_seconds_to_4_hours(app: App, tasks: dict[str, Any], timeout: Any) -> None:
    app.pipeline(tasks["store"].s(1), timeout=10)
    app.pipeline(tasks["store"].s(1), timeout=4 * 3600)
    with pytest.raises(ValueError, match="timeout must be from 10 to 14400 seconds"):
        app.pipeline(tasks["store"].s(1), timeout=timeout).delay()
    nothing_stored(app)


def test_bad_settings_are_refused_naming_the_setting(app: App, tasks: dict[str, Any]) -> None:
    store = tasks["store"]
    with pytest.raises(ValueError, match="restart must be one of"):
        app.pipeline(store.s(1), restart="last")
    with pytest.raises(TypeError, match="kws must be a dict with str keys"):
        app.pipeline(store.s(1), kws={1: "x"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="owner must be a non-empty string"):
        app.pipeline(store.s(1), owner="")
    with pytest.raises(ValueError, match="notify must be True or False"):
        app.pipeline(store.s(1), notify="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"then must be task\.s"):
        app.pipeline(store.s(1), then="next")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Timer takes a number of seconds > 0"):
        Timer(0)
    with pytest.raises(ValueError, match="on_timeout must be one of"):
        Message("x", on_timeout="ignore")
    nothing_stored(app)


# references ---------------------------------------------------------------------------------------------
def test_a_reference_to_a_stage_not_before_it_is_refused(app: App, tasks: dict[str, Any]) -> None:
    fetch, parse = tasks["fetch"], tasks["parse"]
    with pytest.raises(ValueError, match=r"stage 1 \(d.parse\): Ref.stage\(3\) is not an earlier stage"):
        app.pipeline(fetch.s("u"), parse.s(Ref.stage(3)), Timer(1), parse.s(1)).delay()
    with pytest.raises(ValueError, match=r"Ref.stage\(1\) is not an earlier stage"):
        app.pipeline(fetch.s("u"), parse.s(Ref.stage(1)))  # its own result
    with pytest.raises(ValueError, match=r"the first stage has no earlier results"):
        app.pipeline(fetch.s(Ref.stage(0)["url"]))
    with pytest.raises(ValueError, match=r"Ref.stage\(2\)"):
        app.pipeline(fetch.s("u"), parse.s(1).when(Ref.stage(2)["ok"]), parse.s(2))  # in a condition too
    with pytest.raises(ValueError, match=r"then: Ref.stage\(2\)"):
        app.pipeline(fetch.s("u"), parse.s(1), then=parse.s(Ref.stage(2)))
    with pytest.raises(ValueError, match=r"Ref\.stage takes a stage index >= 0"):
        Ref.stage(-1)
    with pytest.raises(ValueError, match="str keys and int indices"):
        Ref.stage(0)[1.5]  # type: ignore[index]
    nothing_stored(app)


def test_a_keyword_reference_missing_from_kws_is_refused_at_enqueue(app: App, tasks: dict[str, Any]) -> None:
    pipe = app.pipeline(tasks["fetch"].s(Ref.kws("x")), tasks["parse"].s(Ref.kws("y")), kws={"y": 1})
    with pytest.raises(ValueError, match=r"refers to keyword\(s\) \['x'\] that kws does not give"):
        pipe.delay()
    nothing_stored(app)
    with app.eager():
        job = app.job(pipe.delay(kws={"x": "http://a"}).id)  # given at enqueue: fine
    assert job.status is Status.SUCCEEDED and job.results[1]["got"] == 1


@pytest.mark.parametrize(
    "condition",
    [
        pytest.param(lambda: "yes", id="a-string"),
        pytest.param(lambda: True, id="a-bool"),
        pytest.param(lambda: Ref.stage(0)["ok"] and Ref.stage(0)["go"], id="python-and-on-refs"),
        pytest.param(lambda: (Ref.stage(0)["n"] > 1) or (Ref.stage(0)["n"] < 0), id="python-or-on-conds"),
        pytest.param(lambda: not Ref.stage(0)["ok"], id="python-not"),
        pytest.param(lambda: 1 < Ref.stage(0)["n"] < 5, id="chained-comparison"),
    ],
)
def test_a_bad_condition_is_refused_with_a_type_error(
    app: App, tasks: dict[str, Any], condition: Callable[[], Any]
) -> None:
    with pytest.raises(TypeError, match=r"condition|resolved when the job runs|combine"):
        app.pipeline(tasks["fetch"].s("u"), tasks["parse"].s(1).when(condition())).delay()
    nothing_stored(app)


def test_something_that_is_not_a_stage_is_refused(app: App, tasks: dict[str, Any]) -> None:
    with pytest.raises(TypeError, match=r"stage 1: a stage is task.s\(...\), Timer\(seconds\) or Message\(name\)"):
        app.pipeline(tasks["fetch"].s("u"), tasks["parse"]).delay()  # the task, not a call of it
    with pytest.raises(TypeError):
        app.pipeline(tasks["fetch"].s(lambda: 1)).delay()  # not JSON
    nothing_stored(app)


# resolving references and conditions (the pure part) -------------------------------------------------------
SCOPE = Scope(
    kws={"url": "http://x", "limits": {"max": 3}},
    results=[{"doc": {"title": "T", "tags": ["a", "b", "c"]}, "n": 2}, None, [10, [20, 30]]],
    job_id="job-1",
)


def frozen(value: Any) -> Any:
    """A value as a job stores it: references encoded, through JSON."""
    return json.loads(json.dumps(encode(value)))


def test_references_resolve_nested_keys_list_indices_keywords_and_the_job_id() -> None:
    value = {
        "title": Ref.stage(0)["doc"]["title"],
        "last_tag": Ref.stage(0)["doc"]["tags"][-1],
        "deep": Ref.stage(2)[1][0],
        "whole": Ref.stage(2),
        "none": Ref.stage(1),
        "url": Ref.kws("url"),
        "max": Ref.kws("limits")["max"],
        "all": Ref.kws(),
        "id": Ref.job_id(),
        "list": [Ref.stage(0)["n"], "plain", 1],
    }
    assert resolve(frozen(value), SCOPE) == {
        "title": "T",
        "last_tag": "c",
        "deep": 20,
        "whole": [10, [20, 30]],
        "none": None,
        "url": "http://x",
        "max": 3,
        "all": {"url": "http://x", "limits": {"max": 3}},
        "id": "job-1",
        "list": [2, "plain", 1],
    }


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        (
            Ref.stage(0)["doc"]["missing"],
            "Ref.stage(0)['doc']['missing']: key 'missing' not found in Ref.stage(0)['doc']",
        ),
        (Ref.stage(0)["doc"]["tags"][3], "Ref.stage(0)['doc']['tags'][3]: index 3 out of range"),
        (Ref.stage(0)["doc"]["tags"][-4], "index -4 out of range (Ref.stage(0)['doc']['tags'] has 3 items)"),
        (Ref.stage(0)["doc"]["tags"]["x"], "Ref.stage(0)['doc']['tags'] is a list, which has no key 'x'"),
        (Ref.stage(0)["doc"][0], "Ref.stage(0)['doc'] is an object, which has no index 0"),
        (Ref.stage(1)["x"], "Ref.stage(1)['x']: Ref.stage(1) is None, which has no key 'x'"),
        (Ref.stage(3), "Ref.stage(3): stage 3 has no result yet"),
        (Ref.kws("nope"), "Ref.kws('nope'): the job has no keyword 'nope' (its keywords: limits, url)"),
        (Ref.kws("url")["x"], "Ref.kws('url') is a string, which has no key 'x'"),
    ],
)
def test_a_reference_that_cannot_be_resolved_raises_template_error_naming_it(ref: Ref, message: str) -> None:
    with pytest.raises(TemplateError) as caught:
        resolve(frozen({"a": [ref]}), SCOPE)
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_conditions_hold_or_not_and_combine() -> None:
    def check(cond: Any) -> bool:
        return holds(json.loads(json.dumps(encode_cond(cond))), SCOPE)

    assert check(Ref.stage(0)["n"] == 2) and not check(Ref.stage(0)["n"] != 2)
    assert check(Ref.stage(0)["n"] > 1) and check(Ref.stage(0)["n"] >= 2) and not check(Ref.stage(0)["n"] < 2)
    assert check(Ref.stage(0)["n"] <= 2)
    assert check(Ref.stage(0)["doc"]["title"] < "U"), "strings compare with strings"
    assert check(Ref.stage(0)["doc"]["tags"]), "a bare Ref: truthy"
    assert not check(Ref.stage(1)) and check(~Ref.stage(1)) and check(Ref.stage(1).is_none())
    assert check(Ref.stage(0)["doc"]["tags"][1].isin(["b", "z"])) and not check(Ref.kws("url").isin(["y"]))
    assert check((Ref.stage(0)["n"] == 2) & (Ref.kws("limits")["max"] > 2))
    assert not check((Ref.stage(0)["n"] == 2) & (Ref.kws("limits")["max"] > 3))
    assert check((Ref.stage(0)["n"] == 3) | Ref.stage(2)[1])
    assert check(~((Ref.stage(0)["n"] == 3) | Ref.stage(1)))
    assert check(Ref.job_id() == "job-1")


def test_a_condition_that_cannot_be_evaluated_raises_template_error() -> None:
    with pytest.raises(TemplateError, match=r"Ref.stage\(0\)\['doc'\]\['title'\] > 1: cannot compare 'T' with 1"):
        holds(encode_cond(Ref.stage(0)["doc"]["title"] > 1), SCOPE)  # type: ignore[arg-type]
    with pytest.raises(TemplateError, match=r"Ref.stage\(0\)\['nope'\]: key 'nope' not found"):
        holds(encode_cond(Ref.stage(0)["nope"] == 1), SCOPE)  # type: ignore[arg-type]
    with pytest.raises(TemplateError, match="cannot compare None"):
        holds(encode_cond(Ref.stage(1) > 0), SCOPE)  # type: ignore[arg-type]


# templating errors when the job runs -------------------------------------------------------------------------
def test_a_reference_that_fails_at_run_time_fails_the_job_naming_it_before_the_stage_runs(
    app: App, tasks: dict[str, Any], calls: Calls
) -> None:
    pipe = app.pipeline(
        tasks["fetch"].s(Ref.kws("url")),
        tasks["parse"].s(Ref.stage(0)["missing"]),
        tasks["store"].s(1),
        kws={"url": "http://a"},
        max_retries=3,
    )
    with app.eager():
        handle = pipe.delay()
    job = app.job(handle.id)
    assert job.status is Status.FAILED
    assert job.error is not None and job.error.type == "TemplateError"
    assert "Ref.stage(0)['missing']" in job.error.message and "stage 1 (d.parse)" in job.error.message
    assert calls == [("fetch", "http://a")], "the stage whose references failed never ran, nor any after it"
    assert job.results == [{"url": "http://a", "doc": {"title": "T", "tags": ["a", "b", "c"]}, "size": 3}]


def test_a_reference_that_fails_outside_eager_mode_fails_the_job_too(
    app: App, tasks: dict[str, Any], calls: Calls
) -> None:
    handle = app.pipeline(
        tasks["fetch"].s("http://b"), tasks["parse"].s(Ref.stage(0)["doc"]["tags"][7]), max_retries=2
    ).delay()
    app.run_until_empty()
    job = app.job(handle.id)
    assert job.status is Status.FAILED, job
    assert job.error is not None and job.error.type == "TemplateError"
    assert "Ref.stage(0)['doc']['tags'][7]" in job.error.message
    assert [name for name, _ in calls] == ["fetch"], "stage 0 ran once, stage 1 never"
    assert job.retries == 0, "a templating error is not retried: it would fail the same way"


# the serialised form ------------------------------------------------------------------------------------------
def test_to_dict_round_trips_through_json_and_enqueues_by_dict_or_name(
    app: App, tasks: dict[str, Any], calls: Calls
) -> None:
    pipe = app.pipeline(
        tasks["fetch"].s(Ref.kws("url")),
        Timer(5),
        Message("approval", timeout=60, on_timeout="continue"),
        tasks["store"].s(Ref.stage(0)["doc"]["tags"][0], approved=Ref.stage(2)).when(Ref.stage(2)["ok"] == True),  # noqa: E712
        name="order",
        kws={"url": "http://x"},
        restart="first",
        max_retries=3,
        timeout=600,
        owner="u-1",
        notify=True,
        then=tasks["parse"].s(Ref.stage(3)),
    )
    data = json.loads(json.dumps(pipe.to_dict()))
    assert data == pipe.to_dict()
    again = Pipeline.from_dict(app, data)
    assert again.to_dict() == pipe.to_dict()

    by_dict = app.job(app.enqueue_pipeline(data, kws={"url": "http://y"}).id)
    by_name = app.job(app.enqueue_pipeline("order").id)
    for job in (by_dict, by_name):
        assert job.is_pipeline and job.stages == pipe.stages
        assert job.status is Status.QUEUED and job.stage == 0 and job.task == "d.fetch"
        assert job.owner == "u-1" and job.notify is True and job.max_retries == 3
        assert job.pipeline is not None and job.pipeline["restart"] == "first" and job.pipeline["timeout"] == 600
    assert by_dict.args == ["http://y"] and by_name.args == ["http://x"]
    assert calls == []

    with pytest.raises(LookupError, match="no pipeline named 'nope'"):
        app.enqueue_pipeline("nope")
    bad = json.loads(json.dumps(data))
    bad["stages"][0]["task"] = "d.unknown"
    with pytest.raises(ValueError, match=r"unknown task 'd\.unknown'"):
        app.enqueue_pipeline(bad)
    bad = json.loads(json.dumps(data))
    bad["stages"][3]["args"] = [{"$conveyor.ref": ["stage", 3]}]
    with pytest.raises(ValueError, match=r"Ref.stage\(3\) is not an earlier stage"):
        app.enqueue_pipeline(bad)
    bad = json.loads(json.dumps(data))
    bad["max_retries"] = 11
    with pytest.raises(ValueError, match="max_retries"):
        app.enqueue_pipeline(bad)
    assert len(app.jobs()) == 2, "the refused dicts stored nothing"


# frozen at enqueue ----------------------------------------------------------------------------------------------
def test_a_job_keeps_the_stages_it_was_enqueued_with_whatever_is_declared_later(
    url: str, app: App, tasks: dict[str, Any], calls: Calls
) -> None:
    payload = {"items": [1]}
    pipe = app.pipeline(
        tasks["fetch"].s("http://old"),
        Message("go"),
        tasks["store"].s("old", payload, seen=Ref.stage(1)),
        name="flow",
    )
    payload["items"].append(2)  # the python objects change after the declaration...
    with app.eager():
        handle = pipe.delay()
    waiting = app.job(handle.id)
    assert waiting.status is Status.WAITING and waiting.stage == 1 and waiting.waiting_for == "go"

    # ...and a deploy: a new process whose app declares the same name, with the same task names, differently.
    deployed = App(url, lease=1.0)
    try:
        new_calls: Calls = []

        @deployed.task(name="d.fetch")
        def fetch(url: str) -> str:
            new_calls.append(("fetch", url))
            return "new fetch"

        @deployed.task(name="d.store")
        def store(*args: Any, **kwargs: Any) -> Any:
            new_calls.append(("store", [list(args), kwargs]))
            return [list(args), kwargs]

        new = deployed.pipeline(store.s("new"), Message("other"), fetch.s("http://new"), name="flow")
        assert new.stages != pipe.stages
        assert deployed.send_message(handle.id, {"ok": 1}, name="go") is Delivery.RESUMED
        deployed.run_until_empty()
        job = deployed.job(handle.id)
        assert job.status is Status.SUCCEEDED, job
        assert job.stages == pipe.stages, "the stored stages are those frozen at enqueue"
        assert job.results[2] == [["old", {"items": [1]}], {"seen": {"ok": 1}}]
        assert new_calls == [("store", [["old", {"items": [1]}], {"seen": {"ok": 1}}])], "the frozen stage ran"

        fresh: Job = deployed.job(deployed.enqueue_pipeline("flow").id)
        assert fresh.stages == new.stages and fresh.task == "d.store", "new jobs take the new declaration"
    finally:
        deployed.close()

    with pytest.raises(ValueError, match="a different pipeline is already declared as 'flow'"):
        app.pipeline(tasks["store"].s("x"), name="flow")
    changed = pipe.to_dict()
    changed["stages"][0]["args"] = ["mutated"]
    assert pipe.stages[0]["args"] == ["http://old"], "to_dict hands out a copy"
