"""popin.toml checked at start: whatever is wrong is one line naming the file, the
setting, what is wrong and what is allowed; `popin serve` exits 2 without a traceback,
and nothing hangs (a slot of 0 minutes used to loop for ever)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from popin.config import ConfigError, find_config, load_settings

SITE = '[[sites]]\nkey = "demo"\n'
CALENDAR = SITE + '[[sites.calendars]]\nname = "advisers"\n'

BAD = [
    # (popin.toml, what the one line must say)
    ("sites = 5", "sites must be an array of tables ([[sites]]), not a number"),
    ("stores = 'x'", "unknown setting 'stores' (did you mean 'store'?)"),
    ("store = 5", "store must be text, not a number"),
    ("secret = 'short'", "secret must be at least 16 characters long"),
    ("[webhooks]\ntimeout = 'soon'", "webhooks: timeout must be a number from 0.5 to 120"),
    ("[webhooks]\nmax_attempts = 0", "max_attempts must be a whole number from 1 to 100"),
    ("[webhooks]\ntimeot = 5", "unknown setting 'timeot' (did you mean 'timeout'?)"),
    ("limits = 3", "limits must be a table, not a number"),
    (SITE + "fatigue = 3", "site 'demo': fatigue must be a table, not a number"),
    (SITE + "fatigue = {per_session = -1}", "per_session must be a whole number from 0 to 100"),
    (SITE + "origins = 'https://a.example'", "origins must be a list of text"),
    (SITE + "timezone = 'Mars/Olympus'", "timezone 'Mars/Olympus' is not a time zone"),
    (SITE + "consent = 'requierd'", "consent is 'implied' or 'required', not 'requierd' "
                                    "(did you mean 'required'?)"),
    (SITE + "nmae = 'x'", "unknown setting 'nmae' (did you mean 'name'?)"),
    (SITE + "[sites.business_hours]\nmonday = '09:00-18:00'",
     "business_hours: unknown setting 'monday' (did you mean 'mon'?)"),
    (SITE + "[sites.business_hours]\nmon = '18:00-09:00'", "a span starts before it ends"),
    (SITE + "[sites.business_hours]\nmon = 'all day'", "not a span like 09:00-18:00"),
    ("[[sites]]\nname = 'no key'", "key must be 1-64 letters, digits, '-' or '_', not ''"),
    ("[[sites]]\nkey = 'a b'", "key must be 1-64 letters, digits"),
    (SITE + SITE, "two sites have the key 'demo'"),
    (CALENDAR + "slot_minutes = 0", "slot_minutes must be a whole number from 5 to 1440, not 0"),
    (CALENDAR + "capacity = 0", "capacity must be a whole number from 1 to 1000, not 0"),
    (CALENDAR + "horizon_days = 100000", "horizon_days must be a whole number from 1 to 365"),
    (CALENDAR + "closed = ['Christmas']", "closed holds 'Christmas', not a day like"),
    (CALENDAR + "channels = ['fax']", "channels holds 'fax'; known: phone, video, store"),
    (CALENDAR + "slot_minutes = 30.5", "slot_minutes must be a whole number"),
    (SITE + "origins = ['ftp://x/y']", "origins holds 'ftp://x/y'; expected \"self\" or an "
                                        "origin as a browser sends it"),
    (SITE + "origins = ['https://*.shop.example']", "no path, no wildcard"),
    (SITE + "origins = ['https://shop.example:99999']", "origins holds 'https://shop.example:9"),
    (SITE + "origins = ['https://shop.example:443']", "no default port"),
    (SITE + "origins = ['https://-']", "origins holds 'https://-'"),
    ('rules = "/etc/passwd"\n' + SITE, "rules: /etc/passwd is a file that is no rule file"),
    (SITE + "holdout = 60", "site 'demo': holdout must be a number from 0 to 50, not 60"),
    (SITE + "holdout = '5%'", "holdout must be a number from 0 to 50, not '5%'"),
    (SITE + "retention_days = 0", "site 'demo': retention_days must be a whole number from 1 "
                                  "to 1825, not 0"),
    (SITE + "retention_days = 3650", "retention_days must be a whole number from 1 to 1825"),
    (SITE + "retention_days = 30.5", "retention_days must be a whole number"),
    # Bounds as README writes them, never 1e+06.
    (SITE + "max_page_revenue = 0", "site 'demo': max_page_revenue must be a number from 1 to "
                                    "1000000, not 0"),
    (SITE + "max_page_revenue = '99'", "max_page_revenue must be a number from 1 to 1000000,"),
    ("[limits]\nsessions = 1", "limits: sessions must be a whole number from 2 to 10000000"),
    ("[webhooks]\npoll_interval = 0", "poll_interval must be a number from 0.05 to 60, not 0"),
    # Entries no URL's host could equal: every webhook to them would be refused.
    ("[webhooks]\nallow_http_hosts = ['http://crm.internal']",
     "webhooks: allow_http_hosts 'http://crm.internal' must be a host name alone (no scheme, "
     "port, path or wildcard)"),
    ("[webhooks]\nallow_http_hosts = ['crm.internal:8080']",
     "allow_http_hosts 'crm.internal:8080' must be a host name alone"),
    ("[webhooks]\nallow_http_hosts = ['*']", "allow_http_hosts '*' must be a host name alone"),
    ("[webhooks]\nallow_http_hosts = ['*.internal']", "'*.internal' must be a host name alone"),
    ("[webhooks]\nallow_http_hosts = ['']", "allow_http_hosts '' must be a host name alone"),
    ("[webhooks]\nallow_http_hosts = ['crm.internal/hooks']", "'crm.internal/hooks' must be a"),
    ("[webhooks]\nallow_http_hosts = ['[::1]']", "'[::1]' must be a host name alone"),
    ("[webhooks]\nallow_http_hosts = ['fe80::1%eth0']", "'fe80::1%eth0' must be a host name"),
    ("[webhooks]\nallow_http_hosts = ['user@crm']", "'user@crm' must be a host name alone"),
    ("[webhooks]\nallow_http_hosts = [' crm']", "' crm' must be a host name alone"),
    (SITE + "[sites.tcf]\npersonalisation = [5, 12]",
     "site 'demo': tcf: personalisation must be a list of TCF purposes, whole numbers from 1 "
     "to 11"),
    (SITE + "[sites.tcf]\naudiences = '3, 4'", "tcf: audiences must be a list of TCF purposes"),
    (SITE + "[sites.tcf]\naudiences = [true]", "tcf: audiences must be a list of TCF purposes"),
    (SITE + "[sites.tcf]\nstorage = [3]", "tcf: storage must hold purpose 1 (store and/or "
                                          "access information on a device)"),
    (SITE + "[sites.tcf]\nbasis = 'vendor'", "tcf: basis is 'purposes' or 'publisher', not "
                                             "'vendor'"),
    (SITE + "[sites.tcf]\npurposes = [1]", "tcf: unknown setting 'purposes'"),
    (SITE + "tcf = 1", "site 'demo': tcf must be a table, not a number"),
    (SITE + "[sites.consent_mode]\nstorage = ['analytic_storage']",
     "consent_mode: storage holds 'analytic_storage' (did you mean 'analytics_storage'?)"),
    (SITE + "[sites.consent_mode]\naudiences = ['ad_storage', 'ad_user_data']",
     "consent_mode: audiences must hold ad_personalization: ad platforms take no visitor "
     "without them"),
]


@pytest.mark.parametrize(("toml", "complaint"), BAD)
def test_a_bad_setting_is_one_line_naming_it(tmp_path: Path, toml: str, complaint: str) -> None:
    path = tmp_path / "popin.toml"
    path.write_text(toml + "\n")
    with pytest.raises(ConfigError) as refused:
        load_settings(path)
    message = str(refused.value)
    assert complaint in message, message
    assert message.startswith(str(path)) and "\n" not in message


def test_every_http_host_accepted_matches_its_urls(tmp_path: Path) -> None:
    path = tmp_path / "popin.toml"
    path.write_text("[webhooks]\nallow_http_hosts = ['CRM.internal', 'hooks_1.lan.', "
                    "'10.0.0.5', '0:0::1', 'localhost']\n")
    webhooks = load_settings(path).webhooks
    for url in ("http://crm.internal/x", "http://Crm.Internal:8080/x?y=1", "http://hooks_1.lan./",
                "http://10.0.0.5:81/", "http://[::1]/h", "http://[0::1]:8080/h",
                "http://localhost/"):
        assert webhooks.scheme_refusal(url) is None, url
    for url in ("http://other.internal/", "http://10.0.0.6/", "http://[::2]/",
                "http://crm.internal.evil/"):
        assert webhooks.scheme_refusal(url) is not None, url


def test_a_folder_given_as_the_config_is_said_to_be_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"is a folder, not a file") as given:
        find_config(tmp_path)
    assert "no such file" not in str(given.value)
    with pytest.raises(ConfigError, match=r"POPIN_CONFIG=.*: is a folder, not a file"):
        find_config(environ={"POPIN_CONFIG": str(tmp_path)})
    result = subprocess.run([sys.executable, "-m", "popin", "--config", str(tmp_path), "serve"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr == (f"popin: --config {tmp_path}: is a folder, not a file; name the "
                             "popin.toml in it\n")


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "popin.toml"
    path.write_bytes(b'store = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="utf-8"):
        load_settings(path)


def test_serve_says_it_in_one_line_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "popin.toml"
    path.write_text(CALENDAR + "slot_minutes = 0\n")
    result = subprocess.run([sys.executable, "-m", "popin", "--config", str(path), "serve"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "slot_minutes must be a whole number from 5" in lines[0]
    assert "Traceback" not in result.stderr


def test_origins_as_browsers_send_them_are_taken(tmp_path: Path) -> None:
    path = tmp_path / "popin.toml"
    path.write_text(SITE + "origins = ['HTTPS://Shop.Example', 'http://[::1]:8080', 'self']\n")
    assert load_settings(path).sites["demo"].allows("https://shop.example", None)


def test_the_default_control_group_is_a_few_percent_and_zero_turns_it_off(
        tmp_path: Path) -> None:
    path = tmp_path / "popin.toml"
    path.write_text(SITE)
    assert load_settings(path).sites["demo"].holdout == 5
    path.write_text(SITE + "holdout = 0\n")
    assert load_settings(path).sites["demo"].holdout == 0
    path.write_text(SITE + "holdout = 2.5\n")
    assert load_settings(path).sites["demo"].holdout == 2.5


def test_a_page_reported_order_counts_at_most_the_sites_max_page_revenue(
        tmp_path: Path) -> None:
    path = tmp_path / "popin.toml"
    path.write_text(SITE)
    assert load_settings(path).sites["demo"].max_page_revenue == 10_000
    path.write_text(SITE + "max_page_revenue = 2500\n")
    assert load_settings(path).sites["demo"].max_page_revenue == 2500


def test_a_visitor_is_kept_thirteen_months_unless_the_site_says_otherwise(
        tmp_path: Path) -> None:
    path = tmp_path / "popin.toml"
    path.write_text(SITE)
    assert load_settings(path).sites["demo"].retention_days == 395
    path.write_text(SITE + "retention_days = 30\n")
    assert load_settings(path).sites["demo"].retention_days == 30


def test_good_settings_load(tmp_path: Path) -> None:
    path = tmp_path / "popin.toml"
    path.write_text(CALENDAR + "slot_minutes = 20\ncapacity = 3\nclosed = ['2026-12-25']\n"
                    "[sites.calendars.special]\n'2026-12-24' = '09:00-12:00'\n")
    calendar = load_settings(path).sites["demo"].calendars["advisers"]
    assert (calendar.slot_minutes, calendar.capacity) == (20, 3)
    assert [str(day) for day in calendar.closed] == ["2026-12-25"]
    assert list(calendar.special.values()) == [((540, 720),)]


def test_consent_tool_mapping_defaults_and_settings(tmp_path: Path) -> None:
    path = tmp_path / "popin.toml"
    path.write_text(SITE)
    mapping = load_settings(path).sites["demo"].consent_map
    assert (mapping.tcf_basis, mapping.tcf_storage, mapping.tcf_personalisation,
            mapping.tcf_audiences) == ("purposes", (1,), (5, 6), (3, 4))
    assert (mapping.mode_storage, mapping.mode_personalisation, mapping.mode_audiences) == (
        ("analytics_storage",), ("analytics_storage",), ("ad_user_data", "ad_personalization"))
    path.write_text(SITE + "[sites.tcf]\nbasis = 'publisher'\npersonalisation = [3, 4]\n"
                    "storage = [1, 1]\n[sites.consent_mode]\naudiences = ['ad_storage', "
                    "'ad_user_data', 'ad_personalization']\npersonalisation = []\n")
    mapping = load_settings(path).sites["demo"].consent_map
    assert (mapping.tcf_basis, mapping.tcf_storage, mapping.tcf_personalisation) == (
        "publisher", (1,), (3, 4))
    assert mapping.mode_audiences == ("ad_storage", "ad_user_data", "ad_personalization")
    assert mapping.mode_personalisation == ()


@pytest.mark.parametrize(("argument", "complaint"), [
    ("--store=nosuch://x", "unknown store 'nosuch'"),
    ("--store=sqlite:////proc/nope/popin.db", "No such file or directory"),
    ("--store=redis://127.0.0.1:1/0", "connecting to 127.0.0.1:1"),
    ("--rules=/nonexistent/rules", "rules: /nonexistent/rules does not exist"),
])
def test_serve_refuses_a_store_or_rules_it_cannot_use_in_one_line(
        tmp_path: Path, argument: str, complaint: str) -> None:
    result = subprocess.run([sys.executable, "-m", "popin", "serve", argument, "--port", "1"],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and complaint in lines[0], result.stderr


@pytest.mark.parametrize("toml", ["", "# nothing yet\n", "[limits]\nconnections = 500\n",
                                  "sites = []\n"])
def test_a_file_without_sites_is_refused_not_served_as_the_demo(tmp_path: Path,
                                                                 toml: str) -> None:
    """No file runs the demo (README's first command); a file found but naming no site
    is an install half made, refused in one line rather than hidden behind the demo."""
    (tmp_path / "popin.toml").write_text(toml)
    environ = {**os.environ, "POPIN_CONFIG": ""}
    for command in (["serve", "--port", "1"], ["keys", "list"]):
        result = subprocess.run([sys.executable, "-m", "popin", *command], cwd=tmp_path,
                                env=environ, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, command
        assert result.stderr == (f"popin: {tmp_path / 'popin.toml'}: no [[sites]] configured; "
                                 "add one (popin init does) or remove the file to run the "
                                 "demo\n"), command
        assert "demo shop at" not in result.stdout
    # Read as a fragment (the loader's own checks, README's snippets), it still loads.
    assert load_settings(tmp_path / "popin.toml").sites.keys() <= {"demo"}
    assert list(load_settings(None, sites_required=True).sites) == ["demo"]
