"""The traps a new user met in the first hour (issue 9), each held by a test: enqueue by name uses
the task's own options, one precedence of store URLs, strict JSON arguments, tasks declared in
__main__, ``module`` alone naming its app, and the demo's honest lines."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from conveyor import App, Priority, load_app
from conveyor.app import DEFAULT_URL, choose_url
from conveyor.backends import describe_url
from conveyor.codec import ArgumentError
from conveyor.demo import MINIMUM, PROCESSES, delay_line, jobs_note
from conveyor.demo_services import one_at_a_time

# enqueue by name ---------------------------------------------------------------------------


def test_enqueue_by_name_applies_every_option_the_task_declares(app: App) -> None:
    @app.task(name="myapp.send_email", queue="emails", max_retries=5, timeout=30, priority=Priority.HIGH, result_ttl=60)
    def send_email(to: str) -> str:
        return to

    job = app.job(app.enqueue("myapp.send_email", ["ada@example.com"]).id)
    assert (job.queue, job.max_retries, job.timeout, job.priority, job.result_ttl) == (
        "emails", 5, 30, Priority.HIGH, 60,
    )  # fmt: skip
    app.run_until_empty(["emails"])
    assert app.job(job.id).result == "ada@example.com"


def test_enqueue_by_name_explicit_call_options_win(app: App) -> None:
    @app.task(name="myapp.send_email", queue="emails", max_retries=5, timeout=30, priority=Priority.HIGH)
    def send_email(to: str) -> str:
        return to

    handle = app.enqueue("myapp.send_email", ["x"], queue="bulk", max_retries=1, timeout=5, priority=Priority.LOW)
    job = app.job(handle.id)
    assert (job.queue, job.max_retries, job.timeout, job.priority) == ("bulk", 1, 5, Priority.LOW)


def test_enqueue_by_a_name_the_app_does_not_know_uses_the_defaults(app: App) -> None:
    """The documented limit: an app that does not declare the task cannot know its options."""
    job = app.job(app.enqueue("elsewhere.send_email", ["x"]).id)
    assert (job.queue, job.max_retries, job.timeout, job.priority) == ("default", 0, None, Priority.NORMAL)


# which store -------------------------------------------------------------------------------


@pytest.fixture
def no_env_url(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("CONVEYOR_URL", raising=False)
    return monkeypatch


def test_the_store_precedence_is_flag_then_env_then_code_then_default(no_env_url: pytest.MonkeyPatch) -> None:
    assert choose_url() == (DEFAULT_URL, "the default")
    assert choose_url(None, "sqlite:///code.db") == ("sqlite:///code.db", "App(url) in code")
    no_env_url.setenv("CONVEYOR_URL", "sqlite:///env.db")
    assert choose_url(None, "sqlite:///code.db") == ("sqlite:///env.db", "$CONVEYOR_URL")
    assert choose_url("sqlite:///flag.db", "sqlite:///code.db") == ("sqlite:///flag.db", "--url")


def test_an_app_records_the_url_given_in_code(no_env_url: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert App().code_url is None
    assert App().url == DEFAULT_URL
    code = f"sqlite:///{tmp_path / 'code.db'}"
    assert (App(code).code_url, App(code).url, App(code).url_source) == (code, code, "App(url) in code")


def test_env_url_overrides_the_url_in_code_with_a_warning(
    no_env_url: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    code, env = f"sqlite:///{tmp_path / 'code.db'}", f"sqlite:///{tmp_path / 'env.db'}"
    no_env_url.setenv("CONVEYOR_URL", env)
    with caplog.at_level(logging.WARNING, logger="conveyor.app"):
        app = App(code)
    assert (app.url, app.code_url, app.url_source) == (env, code, "$CONVEYOR_URL")
    assert "$CONVEYOR_URL" in caplog.text and str(tmp_path / "code.db") in caplog.text
    app.enqueue("t")
    app.close()
    assert (tmp_path / "env.db").exists() and not (tmp_path / "code.db").exists()

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="conveyor.app"):
        App(env)  # the same URL in both places: nothing to warn about
    assert caplog.text == ""


def test_use_url_beats_env_and_code_and_warns_when_it_differs_from_code(
    no_env_url: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    code, flag = f"sqlite:///{tmp_path / 'code.db'}", f"sqlite:///{tmp_path / 'flag.db'}"
    no_env_url.setenv("CONVEYOR_URL", f"sqlite:///{tmp_path / 'env.db'}")
    app = App(code)
    app.enqueue("t")  # opens the env store; use_url must let go of it
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="conveyor.app"):
        app.use_url(flag)
    assert (app.url, app.url_source) == (flag, "--url")
    assert "--url" in caplog.text
    app.enqueue("t")
    assert len(app.jobs()) == 1  # the flag's store, not the env's
    app.use_url(None)
    assert app.url == flag
    app.close()


def test_describe_url_shows_the_absolute_sqlite_path_and_hides_passwords(tmp_path: Path) -> None:
    here = os.getcwd()
    assert describe_url("sqlite:///conveyor.db") == f"sqlite:///{here}/conveyor.db"
    assert describe_url("sqlite:///rel/x.db?durable=false") == f"sqlite:///{here}/rel/x.db?durable=false"
    assert describe_url(f"sqlite:///{tmp_path}/a.db") == f"sqlite:///{tmp_path}/a.db"
    assert describe_url("postgresql://app:s3cret@db.internal:5432/app") == "postgresql://app:***@db.internal:5432/app"
    assert describe_url("postgresql://app@db/app") == "postgresql://app@db/app"


# load_app ----------------------------------------------------------------------------------


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_a_module_alone_names_its_attribute_app(app_dir: Path) -> None:
    (app_dir / "fh_two_apps.py").write_text("from conveyor import App\napp = App()\nother = App()\n")
    module = __import__("fh_two_apps")
    assert load_app("fh_two_apps") is module.app
    assert load_app("fh_two_apps:other") is module.other


def test_a_module_alone_without_app_finds_its_only_app(app_dir: Path) -> None:
    (app_dir / "fh_one_app.py").write_text("from conveyor import App\nqueue_app = App()\n")
    assert load_app("fh_one_app") is __import__("fh_one_app").queue_app


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("fh_bad:ap", "module fh_bad has no attribute ap"),
        ("fh_bad:value", "fh_bad:value is a int, not a conveyor App"),
        ("fh_bad", "module fh_bad has no App and no attribute app"),
        ("fh_bad:", "write module:attribute"),
        ("fh_missing_module:app", "cannot import app module 'fh_missing_module'"),
    ],
)
def test_a_bad_app_path_says_what_is_wrong_in_one_line(app_dir: Path, path: str, message: str) -> None:
    (app_dir / "fh_bad.py").write_text("value = 1\n")
    with pytest.raises(ImportError) as caught:
        load_app(path)
    assert message in str(caught.value) and "\n" not in str(caught.value)


# arguments are JSON, strictly ---------------------------------------------------------------

_NOT_JSON = [
    ("datetime", datetime(2026, 1, 1, tzinfo=UTC)),
    ("date", date(2026, 1, 1)),
    ("bytes", b"\x00\x01"),
    ("set", {1, 2}),
    ("frozenset", frozenset({1})),
    ("tuple", (1, 2)),
]


@pytest.mark.parametrize(("kind", "value"), _NOT_JSON, ids=[k for k, _ in _NOT_JSON])
@pytest.mark.parametrize(
    ("where", "call", "path"),
    [
        ("top-level arg", lambda t, v: t.delay(1, v), "args[1]"),
        ("nested arg", lambda t, v: t.delay({"a": [0, {"b": v}]}), "args[0]['a'][1]['b']"),
        ("kwarg", lambda t, v: t.delay(when=v), "kwargs['when']"),
        ("by name", lambda t, v: t.app.enqueue(t.name, [[v]]), "args[0][0]"),
        ("signature", lambda t, v: t.app.enqueue_many([t.s(1), t.s(v)]), "args[0]"),
    ],
    ids=["arg", "nested", "kwarg", "by-name", "batch"],
)
def test_an_argument_json_would_change_is_refused_naming_its_path_and_type(
    app: App, count_rows, kind: str, value: object, where: str, call, path: str
) -> None:
    @app.task
    def echo(*args: object, **kwargs: object) -> object:
        return args

    with pytest.raises(ArgumentError) as caught:
        call(echo, value)
    message = str(caught.value)
    assert f"argument {path} is a {kind}" in message
    assert echo.name in message
    assert isinstance(caught.value, TypeError)  # what a non-JSON argument always raised
    assert count_rows() == 0


def test_a_dict_with_non_string_keys_is_refused(app: App, count_rows) -> None:
    @app.task
    def echo(x: object) -> object:
        return x

    with pytest.raises(ArgumentError, match=r"args\[0\] has the key 1 \(int\)"):
        echo.delay({1: "a"})
    assert count_rows() == 0


def test_a_value_that_does_not_come_back_equal_is_refused_even_when_its_type_looks_fine(app: App, count_rows) -> None:
    class Odd(str):
        def __eq__(self, other: object) -> bool:
            return False

        __hash__ = str.__hash__

    @app.task
    def echo(x: object) -> object:
        return x

    with pytest.raises(ArgumentError, match="do not come back equal from JSON"):
        echo.delay(Odd("x"))
    assert count_rows() == 0


def test_json_values_and_a_tuple_of_positional_arguments_are_accepted(app: App) -> None:
    @app.task
    def echo(*args: object, **kwargs: object) -> object:
        return [list(args), kwargs]

    value = {"s": "x", "i": 2**70, "f": 1.5, "b": True, "n": None, "l": [1, [2, {"k": "v"}]]}
    handle = app.enqueue(echo.name, (1, value), {"k": value})  # a tuple is the call's positional list
    app.run_until_empty()
    assert handle.result(timeout=1) == [[1, value], {"k": value}]


# a task declared in __main__ -----------------------------------------------------------------


def test_a_task_declared_in_main_warns_at_declaration(app: App) -> None:
    def job() -> None: ...

    job.__module__ = "__main__"
    with pytest.warns(UserWarning, match=r"'__main__\.[^']*job' is declared in __main__.*name="):
        app.task(job)
    with pytest.warns(UserWarning, match="__main__"):
        app.task(queue="q")(job)


def test_a_named_task_in_main_does_not_warn(app: App, recwarn: pytest.WarningsRecorder) -> None:
    def job() -> None: ...

    job.__module__ = "__main__"
    app.task(name="scripts.job")(job)
    assert not [w for w in recwarn if "__main__" in str(w.message)]


def test_a_script_declaring_a_task_sees_the_warning_on_stderr(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent("""
        from conveyor import App
        app = App("sqlite:///s.db")

        @app.task
        def hello() -> None: ...
    """)
    )
    env = {k: v for k, v in os.environ.items() if k != "CONVEYOR_URL"}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert done.returncode == 0
    assert "script.py:5: UserWarning: task '__main__.hello' is declared in __main__" in done.stderr


# the demo's lines ----------------------------------------------------------------------------


def test_the_demo_says_when_jobs_is_below_its_minimum() -> None:
    note = jobs_note(5)
    assert note is not None and f"--jobs 5 is below the demo's minimum of {MINIMUM}" in note
    assert f"running {MINIMUM} jobs" in note
    assert jobs_note(MINIMUM) is None and jobs_note(500) is None
    assert jobs_note(MINIMUM - 1) is not None


def test_the_demo_delay_line_gives_one_value_for_one_start_time_and_explains_a_late_start() -> None:
    together = delay_line(3, [4.001, 4.002, 4.003])
    assert "started 4.00 s after enqueue" in together and "between" not in together and "fell due" not in together
    spread = delay_line(3, [4.01, 4.5, 4.9])
    assert "between 4.01 and 4.90 s" in spread and "up to 0.90 s after they fell due" in spread


def _run(run: str, beats: int = 3) -> list[dict[str, object]]:
    """A whole run's lines in the demo service's beat file: its start, beats, on_stop and end."""
    whats = ["start", *["beat"] * beats, "on_stop", "end"]
    return [{"what": what, "run": run, "pid": 7, "generation": 0, "symbol": "EUR/USD"} for what in whats]


def test_the_demo_service_verdict_catches_two_copies_running_at_once() -> None:
    a, b = _run("a"), _run("b")
    assert one_at_a_time(a + b) == (True, "never two copies at once")
    apart, verdict = one_at_a_time(a[:3] + b + a[3:])  # a still beat after b started
    assert not apart and "TWO COPIES RAN AT ONCE" in verdict
    apart, verdict = one_at_a_time(a[:-2] + b)  # a never got its on_stop and end: killed
    assert not apart and "did not go start, beats, on_stop, end" in verdict


def test_conveyor_demo_with_too_few_jobs_says_so_and_runs_the_minimum(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("CONVEYOR_URL", "CONVEYOR_APP")}
    env["COLUMNS"] = "400"  # one line per message, for the assertions
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "demo", "--jobs", "5"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert f"--jobs 5 is below the demo's minimum of {MINIMUM}" in out
    assert f"{MINIMUM} jobs in " in out
    assert not list(tmp_path.iterdir())  # the demo's store is a temporary file, not one here
    assert f" {PROCESSES} worker processes registered themselves and stopped" in out  # none crashed and restarted
    # the order pipeline: every stage's result, from the record
    assert re.search(r"order \(pipeline\)\W+2\W+2\W+0\W+0\W", out)  # 2 jobs, 2 succeeded, none retried or failed
    assert re.search(
        r"pipeline: order A17 \(job [0-9a-f]{8} of pipeline 'order', owner shop-42\) succeeded after 5 of 5", out
    )
    assert "  0 reserve_stock      {'hold': 'H-A17', 'amount': 24}\n" in out
    message = re.search(
        r"  1 Message\('payment'\) \{'amount': 24\}  \(waited (\d+\.\d+) s .*until the message came\)", out
    )
    assert message and float(message[1]) >= 0.9, out  # the demo pays after 1 s of waiting
    assert "  2 ship_order         {'tracking': 'TRK-A17', 'from': 'H-A17', 'paid': 24}\n" in out
    timer = re.search(r"  3 Timer\(1\)           None  \(waited (\d+\.\d+) s .*until the leader released it\)", out)
    assert timer and float(timer[1]) >= 0.95, out
    assert "  4 confirm_delivery   'A17 delivered (TRK-A17)'\n" in out
    # the mailbox: resumed, a duplicate, a message sent early; the chained receipts; the owner's notifications
    assert "sent once A17 was WAITING for it: RESUMED; the same message id again: DUPLICATE, nothing changed" in out
    assert "sent before B42 got to the wait: STORED in its mailbox" in out
    assert "2 email_receipt jobs, each started by an order's success:" in out and "'receipt for A17: 24 EUR'" in out
    assert re.search(r"notify: 2 unread for shop-42 .*order A17 succeeded \(exit code 0, 5 results\)", out)
    assert "conveyor job " in out and "docs/pipelines.md" in out
    # the schedule declared in code: synced by the workers, fired by both, one job per tick (the demo exits 1 if not)
    ticked = re.search(
        r"schedule: conveyor\.demo_tasks\.tick \(@app\.periodic\(every=1\), synced into the store by the workers as "
        r"they started\) ticked (\d+) times, \d\d:\d\d:\d\d to \d\d:\d\d:\d\d UTC: (\d+) jobs, one per tick: "
        r"none fired twice, none missing\n",
        out,
    )
    assert ticked and int(ticked[1]) == int(ticked[2]) >= 3, out  # the demo runs for several seconds
    assert "both worker processes ran a scheduler, with no leader" in out
    assert re.search(r"each job started \d+\.\d\d-\d+\.\d\d s after its tick", out)
    assert "paused at the end: conveyor schedules lists it" in out and "docs/schedules.md" in out
    assert "conveyor jobs --schedule conveyor.demo_tasks.tick" in out
    # the service: started before the workers, run by one of them, reloaded, handed back at SIGTERM (exit 1 if not)
    assert "started service price_feed (app.start_service, symbol='EUR/USD') before any worker started" in out
    ran = re.search(
        r"service: price_feed \(@app\.service\(lease=3, grace=1\), app\.start_service\(symbol='EUR/USD'\)\) ran 2 "
        r"times: (\d+) beats on worker [01] \(pid \d+, generation 0, EUR/USD\), then (\d+) beats on worker [01] "
        r"\(pid \d+, generation 1, GBP/USD\); .*: never two copies at once\n",
        out,
    )
    assert ran and int(ran[1]) >= 6 and int(ran[2]) >= 4, out
    assert re.search(
        r"reload: app\.reload_service\('price_feed', symbol='GBP/USD'\) after 6 beats: the running copy's on_stop "
        r"hook ran \d+\.\d\d s later \(restart requested\), and generation 1 began \d+\.\d\d s after the reload, "
        r"every beat with symbol GBP/USD: took effect\n",
        out,
    )
    assert "at SIGTERM its on_stop hook ran (worker stopping), the run ended, and the replica was handed back: " \
        "PENDING, held by no worker" in out  # fmt: skip
    assert "conveyor services lists it, conveyor service reload|stop|start price_feed controls it" in out
    assert "docs/services.md" in out


@pytest.mark.parametrize("processes", ["0", "1"], ids=["standalone", "supervised"])
def test_a_worker_serves_the_url_flag_over_the_app_code_and_warns(tmp_path: Path, processes: str) -> None:
    """The supervisor and its children apply the same precedence as a standalone worker."""
    (tmp_path / "fh_worker_app.py").write_text(textwrap.dedent("""
        from conveyor import App
        app = App("sqlite:///code.db", lease=2.0)

        @app.task
        def ping() -> str:
            return "pong"
    """))  # fmt: skip
    flag = f"sqlite:///{tmp_path / 'flag.db'}"
    producer = App(flag)
    handle = producer.enqueue("fh_worker_app.ping")
    env = {k: v for k, v in os.environ.items() if k not in ("CONVEYOR_URL", "CONVEYOR_APP")}
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "worker", "fh_worker_app", "-p", processes, "--url", flag],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        assert handle.result(timeout=60) == "pong"
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(60)
        producer.close()
    text = (tmp_path / "worker.log").read_text()
    assert code == 0, text
    assert f"using the store {flag} from --url, not sqlite:///{tmp_path / 'code.db'} given in code" in text
    assert not (tmp_path / "code.db").exists()
