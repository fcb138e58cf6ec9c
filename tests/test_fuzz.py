"""Property tests over what strangers and owners feed popin: the widget's messages, rule
files and popin.toml. Whatever comes in, only the documented error comes out (an error
frame, file:line, one config line), never a crash. Short in CI; long with POPIN_LONG=1
(or `-m fuzz` with POPIN_LONG=1 for just these)."""

from __future__ import annotations

import os
import random
import tomllib
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from conftest import LOOPBACK, settings_with_rules
from popin.config import ConfigError, Limits, load_settings
from popin.core.rules.campaign import parse_document
from popin.core.rules.yamlsource import SourceError, load
from popin.core.wire.protocol import ProtocolError, decode
from popin.web.app import create_app

LONG = os.environ.get("POPIN_LONG") == "1"
pytestmark = [pytest.mark.fuzz, pytest.mark.timeout(3600 if LONG else 120)]
FUZZ = settings(max_examples=3000 if LONG else 150, deadline=None, derandomize=not LONG,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

TYPES = ["hello", "pageview", "dwell", "scroll", "idle", "exit", "tab", "typing", "consent",
         "event", "popin", "identify", "form", "nonsense"]
FIELDS = ["type", "visitor", "session", "url", "referrer", "language", "timezone", "gpc",
          "consent", "title", "keyword", "seconds", "percent", "name", "props", "id",
          "status", "user_id", "traits", "user_hash", "form", "fields", "granted", "away",
          "cmp", "source", "applies", "purposes", "publisher", "states", "action"]
scalars = (st.none() | st.booleans() | st.integers() | st.floats()
           | st.text(max_size=80) | st.sampled_from(["http://[::1", "https://a.test/x",
                                                     "visitor-0001", "\ud800", "1e999"]))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                           max_leaves=12)
messages = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES)},
    optional={name: json_values for name in FIELDS if name != "type"})


def _json(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except (TypeError, orjson.JSONEncodeError):
        return "{}"


@FUZZ
@given(st.text(max_size=300) | st.binary(max_size=300).map(lambda raw: raw.decode("latin-1")))
def test_any_text_decodes_or_is_a_protocol_error(raw: str) -> None:
    try:
        decode(raw)
    except ProtocolError as error:
        assert error.frame()["code"]


@FUZZ
@given(messages)
def test_any_message_shape_decodes_or_is_a_protocol_error(message: dict[str, Any]) -> None:
    try:
        decode(_json(message))
    except ProtocolError as error:
        assert error.frame()["type"] == "error"


RULE_KEYS = ["id", "trigger", "when", "popin", "assist", "slots", "tag", "webhook", "cap",
             "priority", "holdout", "category", "exclusive", "quiet_after_dismiss",
             "conversion", "expires"]
TRIGGERS = ["pageview", "pageviews", "dwell", "scroll", "time_on_page", "idle", "exit_intent",
            "tab_return", "search", "event", "after", "visit", "birthday"]
rule_values = json_values | st.fixed_dictionaries(
    {}, optional={name: json_values for name in [*TRIGGERS, "title", "body", "cta"]})
rules_documents = st.fixed_dictionaries(
    {"rules": st.lists(st.fixed_dictionaries(
        {"id": st.text(max_size=12)},
        optional={key: rule_values for key in RULE_KEYS if key != "id"}),
        max_size=3)},
    optional={"keywords": json_values, "catalog": json_values, "campaign": json_values,
              "events": json_values})


def _load_rules(text: str) -> None:
    try:
        parse_document(load(text, "fuzz.yaml"), "fuzz.yaml")
    except SourceError as error:
        assert str(error).startswith("fuzz.yaml:")


@FUZZ
@given(st.text(max_size=300))
def test_any_rule_file_text_loads_or_is_a_located_error(text: str) -> None:
    _load_rules(text)


@FUZZ
@given(rules_documents)
def test_any_rule_shape_loads_or_is_a_located_error(document: dict[str, Any]) -> None:
    _load_rules(yaml.safe_dump(document, allow_unicode=True))


TOP = ["store", "rules", "geoip", "secret", "trusted_proxies", "metrics_token",
       "metrics_allow", "sites", "limits", "webhooks", "stores"]
SITE = ["key", "name", "origins", "timezone", "business_hours", "fatigue", "consent",
        "identity_secret", "unsigned_identify", "calendars", "notify_url", "tcf", "consent_mode"]
toml_scalars = (st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False)
                | st.text(max_size=30) | st.sampled_from(["demo", "Europe/Paris", "09:00-18:00"]))
toml_values = st.recursive(toml_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(min_size=1, max_size=12), inner,
                                             max_size=3), max_leaves=8)
configs = st.fixed_dictionaries({}, optional={
    **{key: toml_values for key in TOP},
    "sites": st.lists(st.fixed_dictionaries({}, optional={key: toml_values for key in SITE}),
                      max_size=2)})


def _toml(value: Any, prefix: str = "") -> str:
    """A small TOML writer (tomllib only reads): inline tables and arrays."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if value == value and abs(value) != float("inf") else "0"
    if isinstance(value, str):
        return orjson.dumps(value).decode()
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return "{" + ", ".join(f"{orjson.dumps(key).decode()} = {_toml(item)}"
                           for key, item in value.items()) + "}"


@FUZZ
@given(configs)
def test_any_config_loads_or_is_one_line(tmp_path: Path, config: dict[str, Any]) -> None:
    text = "\n".join(f"{key} = {_toml(value)}" for key, value in config.items())
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return  # our writer made something TOML refuses: not what is under test
    path = tmp_path / "popin.toml"
    path.write_text(text)
    try:
        load_settings(path)
    except ConfigError as error:
        assert "\n" not in str(error) and str(error).startswith(str(path))


@FUZZ
@given(st.binary(max_size=200))
def test_any_bytes_as_config_is_one_line(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "popin.toml"
    path.write_bytes(raw)
    try:
        load_settings(path)
    except ConfigError as error:
        assert str(error).startswith(str(path))


def _garbage(chooser: random.Random) -> str:
    """A frame a hostile page might send: junk text, or a message of a real type with
    fields of the wrong kind."""
    junk: list[Any] = [None, True, -1, 2**70, 1e308, "", "x" * 500, "http://[::1", "\ud800",
                       [], {}, {"a": {"b": [1]}}, "visitor-0001", "<script>"]
    if chooser.random() < 0.3:
        return "".join(chr(chooser.randrange(1, 0x2FF)) for _ in range(chooser.randrange(60)))
    message = {"type": chooser.choice(TYPES)}
    for name in chooser.sample(FIELDS[1:], chooser.randrange(6)):
        message[name] = chooser.choice(junk)
    return _json(message)


def test_garbage_on_sockets_leaves_the_server_serving(tmp_path: Path) -> None:
    """Sockets stream random frames, then a well-behaved widget is served as usual."""
    # Every socket comes from one address, faster than the handshake brake allows.
    settings_ = settings_with_rules(tmp_path, "rules:\n  - {id: hi, trigger: {event: go}, "
                                    "popin: {title: t, body: b}}\n",
                                    limits=Limits(handshake_burst=100))
    hello = {"type": "hello", "visitor": "visitor-0001", "session": "session-0001",
             "url": "http://testserver/"}
    chooser = random.Random(None if LONG else 13)
    origin = {"origin": "http://testserver"}
    with TestClient(create_app(settings_), client=LOOPBACK) as client:
        for number in range(40 if LONG else 6):
            with client.websocket_connect("/ws?site=demo", headers=origin) as ws:
                if number % 2:
                    ws.send_text(orjson.dumps({**hello, "visitor": "visitor-fuzz"}).decode())
                for _ in range(chooser.randrange(5, 19)):  # under the 20 errors that close
                    ws.send_text(_garbage(chooser))
        with client.websocket_connect("/ws?site=demo", headers=origin) as ws:
            ws.send_text(orjson.dumps(hello).decode())
            assert ws.receive_json()["type"] == "config"
            ws.send_text('{"type": "event", "name": "go"}')
            assert ws.receive_json()["rule"] == "hi"
        assert client.get("/healthz").json()["ok"] is True
        assert 'kind="error.' in client.get("/metrics").text, "the garbage was answered"
