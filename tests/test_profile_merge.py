"""The three-way merge of a visitor's profile that two processes changed from the same
stored version: both changes kept, and an unchanged side gives the other side exactly."""

from __future__ import annotations

import copy

from hypothesis import given
from hypothesis import strategies as st

from popin.core.visitor.identity import merge_into
from popin.core.visitor.merge import merge_profiles
from popin.core.visitor.profile import CartLine, Profile


def base() -> Profile:
    profile = Profile("visitor-merge-01", visits=3, first_seen=100.0, last_seen=500.0,
                      previous_seen=400.0, last_session="s3", first_name="Ana")
    profile.interests = {"waxing": 10.0, "poles": 2.0}
    profile.history("waxing-help").record_shown(450.0)
    profile.exposures = [450.0]
    profile.cart = {"ski-1": CartLine("Skis", 300.0, 1)}
    profile.audiences = {"skiers": 9000.0}
    return profile


def merged(common: Profile, mine: Profile, theirs: Profile) -> Profile:
    return Profile.from_json(merge_profiles(common.to_json(), mine.to_json(), theirs.to_json()))


def test_both_sides_changes_are_kept() -> None:
    common = base()
    mine, theirs = copy.deepcopy(common), copy.deepcopy(common)
    mine.start_visit("s4-here", 600.0)
    mine.interests["waxing"] += 5.0
    mine.interests["boots"] = 1.0
    mine.history("waxing-help").record_shown(610.0)
    mine.record_exposure(610.0)
    mine.cart["wax-1"] = CartLine("Wax", 12.0, 2)
    theirs.start_visit("s4-there", 700.0)
    theirs.interests["waxing"] += 3.0
    theirs.history("waxing-help").record_shown(710.0)
    theirs.history("waxing-help").clicked = 712.0
    theirs.record_exposure(710.0)
    del theirs.cart["ski-1"]
    theirs.audiences["skiers"] = 9500.0
    theirs.birthday = "04-12"

    result = merged(common, mine, theirs)
    assert result.visits == 5 and result.last_seen == 700.0 and result.first_seen == 100.0
    assert result.interests == {"waxing": 18.0, "poles": 2.0, "boots": 1.0}
    history = result.popins["waxing-help"]
    assert history.shown == [450.0, 610.0, 710.0] and history.clicked == 712.0
    assert result.exposures == [450.0, 610.0, 710.0]
    assert result.cart == {"wax-1": CartLine("Wax", 12.0, 2)}
    assert result.audiences == {"skiers": 9500.0}
    assert (result.birthday, result.first_name) == ("04-12", "Ana")
    # Merging is symmetric in what it keeps of the counters and logs.
    other_way = merged(common, theirs, mine)
    assert (other_way.visits, other_way.interests, other_way.exposures) == (
        result.visits, result.interests, result.exposures)


def test_a_refusal_written_over_an_unchanged_profile_keeps_nothing_else() -> None:
    common = base()
    refusal = Profile(common.visitor, withheld=["personalisation", "audiences"])
    assert merged(common, refusal, copy.deepcopy(common)) == refusal


words = st.text(alphabet="abcdef", min_size=1, max_size=3)
profiles = st.builds(
    Profile, visitor=st.just("visitor-any"), visits=st.integers(0, 50),
    first_seen=st.floats(0, 1e6), last_seen=st.floats(0, 1e6),
    interests=st.dictionaries(words, st.floats(0, 1e4), max_size=4),
    exposures=st.lists(st.floats(0, 1e6), max_size=5).map(sorted),
    first_name=words, audiences=st.dictionaries(words, st.floats(0, 1e9), max_size=3))


@given(profiles, profiles)
def test_a_side_that_did_not_change_gives_the_other_exactly(common: Profile,
                                                            changed: Profile) -> None:
    assert merged(common, changed, common) == changed
    assert merged(common, common, changed) == changed


def test_a_confirmation_round_trips_and_a_profile_stored_before_it_existed_loads() -> None:
    profile = base()
    profile.history("buy").confirmed = 610.0
    assert Profile.from_json(profile.to_json()).popins["buy"].confirmed == 610.0
    old = b'{"visitor": "v", "popins": {"buy": {"shown": [1.0], "converted": 2.0}}}'
    history = Profile.from_json(old).popins["buy"]
    assert (history.converted, history.confirmed) == (2.0, None)


def test_a_confirmation_on_another_process_is_kept() -> None:
    common = base()
    mine, theirs = copy.deepcopy(common), copy.deepcopy(common)
    mine.history("waxing-help").converted = 620.0
    theirs.history("waxing-help").confirmed = 620.0
    history = merged(common, mine, theirs).popins["waxing-help"]
    assert (history.converted, history.confirmed) == (620.0, 620.0)


def test_a_device_folded_into_the_users_profile_brings_its_confirmation() -> None:
    kept, other = base(), base()
    other.history("waxing-help").confirmed = 620.0
    merge_into(kept, other)
    assert kept.popins["waxing-help"].confirmed == 620.0
