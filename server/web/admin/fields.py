"""The campaign editor's one table of fields: each names where it goes in a rule file, what
it takes, and says in one line what it does. The form, the reading of a rule into the
form and the writing of the form back into the rule are all driven from it."""

from __future__ import annotations

from dataclasses import dataclass

from ...core.rules.actions import ASSIST_CHANNELS, SLOT_CHANNELS, VISUAL_ACTIONS
from ...core.rules.campaign import CATEGORIES
from ...core.rules.conditions import COMBINATORS, FIELDS
from ...core.rules.templates import PLACEMENTS
from ...core.rules.triggers import COMPILERS

# Rows the form offers for conditions and for variants; more stay in the file as written.
CONDITION_ROWS = 5
VARIANT_ROWS = 3
TAG_ROWS = 3
# A rule key written as one value stands for this key of its mapping (`tag: ski-care`).
SHORTHANDS = {"tag": "audience", "conversion": "event"}
# Triggers that take no value: their YAML says `true`.
FLAG_TRIGGERS = ("exit_intent", "birthday")
MODES = {"all": "all of these hold", "any": "any of these holds",
         "not": "none of these holds"}


@dataclass(frozen=True, slots=True)
class Field:
    # The form's name for it, which is also its path in the rule ("cap.per_session").
    name: str
    label: str
    explain: str
    # text, long, number, count, duration, choice, list, map, value (any YAML value)
    kind: str = "text"
    choices: tuple[str, ...] = ()
    # Shown only for one trigger kind or one action ("trigger:dwell", "show:popin").
    only: str = ""
    default: str = ""

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(self.name.split("."))


def _trigger(kind: str, *fields: tuple[str, str, str, str, str]) -> list[Field]:
    return [Field(f"trigger.{kind}{'.' + key if key else ''}", label, explain, form,
                  only=f"trigger:{kind}", default=default)
            for key, label, explain, form, default in fields]


TRIGGER = Field("trigger", "When", "What the visitor does that starts the campaign.",
                "choice", tuple(COMPILERS), default="dwell")
TRIGGER_FIELDS = [
    *_trigger("pageview", ("", "Page", "The page's path; * stands for any part: /products/*",
                           "text", "/")),
    *_trigger("pageviews", ("url", "Pages", "Which pages count, as a path: /skis/**", "text",
                            "/**"),
              ("count", "How many", "The campaign starts on the visitor's Nth such page "
               "in a visit.", "count", "3")),
    *_trigger("dwell", ("keyword", "Keyword", "A word (or keyword group) the visitor reads "
                        "about on the page.", "text", ""),
              ("seconds", "Seconds", "How long text with that word stays in view while the "
               "visitor is active.", "number", "5"),
              ("selector", "Only in", "Optional: a CSS selector of the part of the page to "
               "watch, such as #guide.", "text", "")),
    *_trigger("scroll", ("", "Percent", "How far down the page, in percent.", "number",
                         "75")),
    *_trigger("time_on_page", ("", "Time", "How long on one page: 45s, 2m.", "duration",
                               "45s")),
    *_trigger("idle", ("", "Idle for", "No interaction at all for this long: 30s.",
                       "duration", "30s")),
    *_trigger("tab_return", ("", "Away for", "Back on the tab after it was hidden this "
                             "long: 2m.", "duration", "2m")),
    *_trigger("search", ("", "Search", "A word or keyword group searched on the site, or "
                         "any.", "text", "any")),
    *_trigger("event", ("name", "Event", "The event your page or backend sends, such as "
                        "add_to_cart.", "text", ""),
              ("props", "With", "Optional: properties it must carry, as key: value, "
               "key: value.", "map", "")),
    *_trigger("after", ("event", "After", "The event that starts the clock, such as "
                        "add_to_cart.", "text", ""),
              ("without", "Without", "Events that cancel it if they come first (comma "
               "separated).", "list", ""),
              ("within", "Within", "How long to wait for them: 60s.", "duration", "60s")),
    *_trigger("visit", ("", "Visit", "first, returning, {number: 3} (the 3rd visit) or "
                        "{returning_after: 30d} (back after 30 days).", "value", "returning")),
]

SHOW = Field("show", "Show", "What the visitor sees: a pop-in, an assistance offer, time "
             "slots to book, or nothing (the campaign only tags or calls a webhook).",
             "choice", (*VISUAL_ACTIONS, "nothing"), default="popin")


def _visual(kind: str) -> list[Field]:
    only = f"show:{kind}"
    fields = [Field(f"{kind}.title", "Title", "The card's headline; {{ visitor.first_name }} "
                    "and other template variables work here.", only=only),
              Field(f"{kind}.body", "Text", "The card's text (HTML allowed, kept safe).",
                    "long", only=only)]
    if kind == "popin":
        fields += [
            Field("popin.cta.label", "Button", "Optional: the button's words.", only=only),
            Field("popin.cta.url", "Button link", "Where the button leads: /page or https://.",
                  only=only),
            Field("popin.placement", "Placement", "Where the card appears; a bar spans the "
                  "page's width.", "choice", PLACEMENTS, only, "corner"),
            Field("popin.slot", "Inside", "For placement inline: the CSS selector of the "
                  "page's element that holds the card.", only=only),
            Field("popin.delay", "Delay", "Optional: wait this long after the trigger: 3s.",
                  "duration", only=only)]
    else:
        channels = ASSIST_CHANNELS if kind == "assist" else SLOT_CHANNELS
        fields.append(Field(f"{kind}.channels", "Channels", "What the visitor may choose "
                            f"(comma separated): {', '.join(channels)}.", "list", only=only))
    if kind == "slots":
        fields.append(Field("slots.calendar", "Calendar", "The calendar whose free slots "
                            "are offered (from popin.toml).", only=only))
    return fields


FIELDS_TABLE: dict[str, list[Field]] = {
    "Campaign": [
        Field("id", "Name", "The campaign's short name in the files and figures: lower-case "
              "letters, digits and -."),
        Field("description", "Purpose", "One line for your colleagues: why this campaign "
              "exists."),
        Field("category", "Category", "Functional and transactional messages answer the "
              "visitor and skip the fatigue budget; events and behavioural ones are "
              "marketing.", "choice", CATEGORIES, default="behavioural"),
    ],
    "Trigger": [TRIGGER, *TRIGGER_FIELDS],
    "Action": [SHOW, *_visual("popin"), *_visual("assist"), *_visual("slots"),
               Field("webhook.url", "Webhook", "Optional: an https address told about each "
                     "visitor it fires for.")],
    "Limits": [
        Field("cap.per_session", "Per visit", "At most this many times per visit.", "count",
              default="1"),
        Field("cap.per_visitor", "Per visitor", "Optional: at most this many times per "
              "visitor...", "count"),
        Field("cap.window", "In", "...over this period: 30d.", "duration"),
        Field("quiet_after_dismiss", "Quiet after a close", "Not again for this long after "
              "the visitor closes it: 7d.", "duration"),
        Field("priority", "Priority", "When several campaigns match at once, the highest "
              "shows.", "count"),
        Field("exclusive", "Group", "Optional: at most one campaign of this group per visit."),
        Field("holdout", "Control group %", "Percent of visitors kept out to measure the "
              "lift; empty: the site's default.", "number"),
        Field("expires", "Waits for", "A pop-in for an absent visitor waits this long for "
              "their next visit.", "duration"),
    ],
    "Success": [
        Field("conversion.event", "Success is", "The event that counts as success, such as "
              "order_placed."),
        Field("conversion.within", "Within", "How soon after the pop-in: 1d (at most 30d).",
              "duration"),
        Field("conversion.value", "Worth", "The event's property that holds the revenue."),
        Field("conversion.where", "Only when", "Optional: properties it must carry, as key: "
              "value.", "map"),
    ],
}
CONDITION_NAMES = (*FIELDS, *COMBINATORS)
CONDITION_HELP = ("Who it is for: a condition and its value, such as device = mobile, "
                  "visits = {min: 2}, country = FR, BE.")
TAG_HELP = ("Optional: the retargeting audiences the visitor joins, each for a number of "
            "days (empty: the language's default).")
VARIANT_HELP = ("An experiment: versions of the pop-in, each shown to a stable share of "
                "visitors; a version without a title keeps the pop-in's.")
ALL_FIELDS = [field for group in FIELDS_TABLE.values() for field in group]
BY_NAME = {field.name: field for field in ALL_FIELDS}
# Longest value a field takes; the rule language's own limits are checked on save.
MAX_VALUE = 10_000
