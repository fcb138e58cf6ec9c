"""Pop-in templates: jinja2's sandboxed, autoescaping environment, compiled at load time."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import nh3
from jinja2 import Template, TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup

from .schema import Reader, place
from .variables import Cards, UsingTemplate, uses_of
from .yamlsource import Mapping

PLACEMENTS = ("corner", "corner_left", "top_bar", "bottom_bar", "inline")
CORNERS = ("corner", "corner_left")
# Pixels from the corner's two edges; more than this is not a corner any more.
DEFAULT_OFFSET = (16, 16)
MAX_OFFSET = 400
POPIN_KEYS = ("title", "body", "cta", "placement", "slot", "delay", "offset")
# A pop-in may wait this long after its trigger; longer and the moment has passed.
MAX_DELAY_SECONDS = 120.0
# Where a call-to-action may lead: never javascript: or data: URLs.
SAFE_URL_SCHEMES = frozenset({"", "http", "https", "mailto", "tel"})
# What a browser drops before it reads a URL's scheme (the WHATWG URL standard): C0
# controls and spaces at either end, tabs and newlines anywhere; " JaVa\tscript:" is
# javascript: to a browser, so it must be to us.
_URL_ENDS = "".join(map(chr, range(0x21)))
_URL_INSIDE = re.compile(r"[\t\n\r]")
_URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")

# An owner's template runs on the event loop for every pop-in: whatever it computes must
# stay small. Longest text built by repetition or padding, largest count or width passed
# to a function, longest range, deepest loop nesting, largest card.
MAX_BUILT_TEXT = 1000
MAX_ARGUMENT = 10_000
MAX_RANGE = 100
MAX_LOOP_DEPTH = 2
MAX_CARD_BYTES = 32 * 1024
# "%100000s", "{:>100000}": padding to a width of five digits or more.
_WIDE = re.compile(r"%[-+ #0]*\d{5,}|\{[^{}]*:[^{}]*\d{5,}")


def _refuse_big(*values: Any) -> None:
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_ARGUMENT:
            raise SecurityError(f"{value} is more than a pop-in needs (at most {MAX_ARGUMENT})")


class BoundedEnvironment(SandboxedEnvironment):
    """The sandbox (no attribute or call that reaches Python's internals), and no
    computation that grows without bound: repetition, powers, padding and ranges are
    capped, so a template cannot stall the server."""

    template_class = UsingTemplate

    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for sequence, times in ((left, right), (right, left)):
                if isinstance(sequence, str | list | tuple) and isinstance(times, int) and (
                        len(sequence) * times > MAX_BUILT_TEXT):
                    raise SecurityError(f"repeating to more than {MAX_BUILT_TEXT} items")
        elif operator == "**":
            if isinstance(right, int | float) and abs(right) > 64:
                raise SecurityError("a power above 64")
        elif operator == "%" and isinstance(left, str) and _WIDE.search(left):
            raise SecurityError("padding wider than a pop-in")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any,
             **kwargs: Any) -> Any:
        _refuse_big(*args, *kwargs.values())
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        owner = getattr(value, "__self__", None)
        if isinstance(owner, str) and _WIDE.search(owner):
            raise SecurityError("padding wider than a pop-in")
        return super().wrap_str_format(value)


def _bounded_filter(name: str, environment: SandboxedEnvironment) -> None:
    original = environment.filters[name]

    def bounded(*args: Any, **kwargs: Any) -> Any:
        _refuse_big(*args[1:], *kwargs.values())
        if name == "format" and isinstance(args[0], str) and _WIDE.search(args[0]):
            raise SecurityError("padding wider than a pop-in")
        return original(*args, **kwargs)

    environment.filters[name] = bounded


def _small_range(*bounds: int) -> range:
    _refuse_big(*bounds)
    found = range(*bounds)
    if len(found) > MAX_RANGE:
        raise SecurityError(f"a range of more than {MAX_RANGE}")
    return found


ENVIRONMENT = BoundedEnvironment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
ENVIRONMENT.globals["range"] = _small_range
for _name in ("center", "indent", "format", "truncate", "wordwrap", "batch", "slice"):
    _bounded_filter(_name, ENVIRONMENT)

# The card around the owner's content; the widget styles it inside its Shadow DOM.
CARD = ENVIRONMENT.from_string(
    '<div class="card {{ placement }}" role="dialog" aria-live="polite"'
    ' aria-label="{{ title|striptags }}">'
    '<button class="close" type="button" aria-label="Close" data-popin-dismiss>&times;</button>'
    '<p class="title">{{ title }}</p><div class="body">{{ body }}</div>'
    '{% for label, url in links %}<a class="cta" href="{{ url }}">{{ label }}</a> {% endfor %}'
    '{% if form %}<div class="area" data-popin-area>{{ form }}</div>{% endif %}'
    "</div>"
)


# What the owner's title may hold: inline emphasis only (it is also the dialog's label).
TITLE_TAGS = {"b", "strong", "i", "em", "u", "s", "small", "span", "br", "mark"}


def owner_html(html: str, tags: set[str] | None = None) -> Markup:
    """The owner's markup as it may reach a visitor's page: tags and attributes from
    Ammonia's allow-list (no script, event handler, iframe, form, style or meta; links
    only to safe schemes). Whoever edits a campaign, in a file or in the dashboard,
    cannot run script in the site's pages through a pop-in."""
    return Markup(nh3.clean(html, tags=tags) if tags is not None else nh3.clean(html))


def link_scheme(url: str) -> str:
    """The scheme a browser reads in `url` (an href's value, entities decoded), lower
    case; '' for a URL without one: a path, or a network-path reference such as
    //other.example or \\other.example, which browsers open on that other host."""
    found = _URL_SCHEME.match(_URL_INSIDE.sub("", url.strip(_URL_ENDS)))
    return found[1].lower() if found else ""


def link_url(rendered: str) -> Markup:
    """A link template's output as it goes into the card's href."""
    return Markup(rendered.strip())


def link_refusal(url: Markup) -> str | None:
    """Why a card may not hold a link to `url`; None if it may. The one decision for the
    loader (a literal URL) and each render (a templated one)."""
    scheme = link_scheme(url.unescape())
    if scheme in SAFE_URL_SCHEMES:
        return None
    return f"link URL {url[:40]!r} has a forbidden scheme ({scheme}:)"


class RenderError(Exception):
    """A template failed at render time (sandbox refusal, bad URL, ...)."""


@dataclass(frozen=True, slots=True)
class PopinTemplate:
    """Anything shown on the page: a pop-in, an assistance offer, appointment slots."""

    title: Template
    body: Template
    # (label, url) templates; the first is the call to action.
    links: tuple[tuple[Template, Template], ...] = ()
    placement: str = "corner"
    # A CSS selector for placement "inline": the page's own reserved slot.
    slot: str = ""
    kind: str = "popin"
    # assist: the ways to help offered; slots: the ways to meet (empty: the calendar's).
    channels: tuple[str, ...] = ()
    calendar: str = ""
    # The card's form area, made once at load time by the action that needs one; the
    # template neither knows nor cares which form it is.
    form: str = ""
    # Seconds the widget waits before showing the card (the visitor may leave first).
    delay: float = 0.0
    # A corner card's distance from the side and the bottom of the window, in pixels.
    offset: tuple[int, int] = DEFAULT_OFFSET
    cards: Cards = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cards", Cards([self.title, self.body, *(
            template for link in self.links for template in link)]))

    def render(self, context: dict[str, Any]) -> str:
        key = self.cards.key(context)
        card = self.cards.get(key)
        if card is None:
            card = self._render(context)
            self.cards.keep(key, card)
        return card

    def _render(self, context: dict[str, Any]) -> str:
        try:
            # What the owner's templates render is already escaped (the environment
            # autoescapes): Markup, so the card does not escape it a second time.
            links = []
            for label, url_template in self.links:
                url = link_url(url_template.render(context))
                refused = link_refusal(url)
                if refused:
                    raise RenderError(refused)
                links.append((owner_html(label.render(context), TITLE_TAGS), url))
            card = CARD.render(title=owner_html(self.title.render(context), TITLE_TAGS),
                               body=owner_html(self.body.render(context)),
                               links=links, placement=self.placement,
                               form=Markup(self.form))
            if len(card) > MAX_CARD_BYTES:
                raise RenderError(f"the pop-in is {len(card)} characters long; at most "
                                  f"{MAX_CARD_BYTES} are sent")
            return card
        except RenderError:
            raise
        except Exception as error:
            # Owners' templates are code: whatever they raise must not reach the socket.
            raise RenderError(f"{type(error).__name__}: {error}") from error


def _loop_depth(node: nodes.Node) -> int:
    below = max((_loop_depth(child) for child in node.iter_child_nodes()), default=0)
    return below + 1 if isinstance(node, nodes.For) else below


def compile_template(node: Mapping, key: str, reader: Reader) -> Template:
    source = reader.text(node, key, max_length=5000)

    def line_of(line_in_template: int) -> int:
        # A block scalar (`body: |`) starts on the line after its key.
        return node.line_of(key) + (line_in_template if "\n" in source else 0)

    try:
        tree = ENVIRONMENT.parse(source)
        if _loop_depth(tree) > MAX_LOOP_DEPTH:
            reader.fail(node.line_of(key), f"template error in {key!r}: loops nested more "
                        f"than {MAX_LOOP_DEPTH} deep; expected at most {MAX_LOOP_DEPTH} (a "
                        "pop-in never needs more)")
        private = _private_read(tree)
        if private is not None:
            line, name = private
            reader.fail(line_of(line),
                        f"template error in {key!r}: templates may not read names starting "
                        f"with '_' ({name!r}); expected a template that reads the visitor's, "
                        "the page's and the event's values")
        template = ENVIRONMENT.from_string(source)
        assert isinstance(template, UsingTemplate)
        template.uses = uses_of(tree)
    except TemplateSyntaxError as error:
        reader.fail(line_of(error.lineno), f"template error in {key!r}: "
                    f"{(error.message or 'invalid').rstrip('.')}; expected a Jinja template")
    refused = _sandbox_refusal(template)
    if refused is not None:
        line, message = refused
        reader.fail(line_of(line),
                    f"template error in {key!r}: the sandbox refuses it, for every visitor "
                    f"({message.rstrip('.')}); expected a template that reads the visitor's, "
                    "the page's and the event's values, within a pop-in's size")
    return template


# Filters that read an attribute named by their `attribute=` argument ("a.b" reads a, then b).
_ATTRIBUTE_FILTERS = frozenset({"map", "sort", "groupby", "sum", "selectattr", "rejectattr",
                                "unique", "min", "max"})


def _private_read(node: nodes.Node) -> tuple[int, str] | None:
    """The line and name of the first read of a name starting with '_' written in the
    template. The sandbox turns such a read into empty text when it is only printed
    ({{ self.__init__ }}), so the render at load time cannot see it; the owner would get
    a pop-in with a hole in it, and no word why."""
    # Inner nodes first: in self.__init__.__globals__ the owner wrote __init__ first.
    for child in node.iter_child_nodes():
        found = _private_read(child)
        if found is not None:
            return found
    names: list[object] = []
    if isinstance(node, nodes.Getattr):
        names.append(node.attr)
    elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        names.append(node.arg.value)
    elif isinstance(node, nodes.Filter) and node.name == "attr":
        names.extend(arg.value for arg in node.args[:1] if isinstance(arg, nodes.Const))
    elif isinstance(node, nodes.Filter) and node.name in _ATTRIBUTE_FILTERS:
        names.extend(part for keyword in node.kwargs if keyword.key == "attribute"
                     and isinstance(keyword.value, nodes.Const)
                     and isinstance(keyword.value.value, str)
                     for part in keyword.value.value.split("."))
    for name in names:
        if isinstance(name, str) and name.startswith("_"):
            return node.lineno, name
    return None


def _sandbox_refusal(template: Template) -> tuple[int, str] | None:
    """The line and message of a refusal the sandbox makes with no visitor at all: it
    makes it for every visitor then (Python's internals, a size past the caps), so the
    pop-in could never show. Any other failure depends on a visitor's values: the render
    with a sample visitor (core/checks.py) warns of it."""
    try:
        template.render()
    except SecurityError as error:
        line, trace = 1, error.__traceback__
        while trace is not None:
            if trace.tb_frame.f_code.co_filename == "<template>":
                line = trace.tb_lineno
            trace = trace.tb_next
        return line, str(error)
    except Exception:
        return None
    return None


def compile_link(node: Mapping, reader: Reader) -> tuple[Template, Template]:
    """A call to action's label and URL. A URL written out, with no template in it, is
    judged now as each render would judge it: a scheme that is always refused means a
    pop-in that never shows."""
    label, url = compile_template(node, "label", reader), compile_template(node, "url", reader)
    tree = ENVIRONMENT.parse(node["url"])
    written_out = all(isinstance(part, nodes.Output) and all(
        isinstance(data, nodes.TemplateData) for data in part.nodes) for part in tree.body)
    # A template that reads nothing, {{ 'javascript:alert(1)' }}, renders the same link for
    # every visitor: it is judged now, as a link written out is.
    if written_out or not meta.find_undeclared_variables(tree):
        try:
            rendered = link_url(url.render())
        except Exception:
            # Not a link to judge: what a failing render means is the sample check's say.
            return label, url
        if link_refusal(rendered):
            shown = f"is {str(rendered)[:60]!r}" if written_out else (
                f"renders to {str(rendered)[:60]!r} for every visitor")
            reader.fail(node.line_of("url"), f"'cta.url' {shown}, a "
                        f"{link_scheme(rendered.unescape())}: link, which a pop-in never "
                        "holds (it would never show); expected a link over http, https, "
                        "mailto or tel, or a relative one such as /page")
    return label, url


def compile_popin(value: Any, line: int, reader: Reader) -> PopinTemplate:
    node = reader.mapping(value, line, "'popin'")
    reader.keys(node, "'popin'", POPIN_KEYS, required=["title", "body"])
    links: tuple[tuple[Template, Template], ...] = ()
    if "cta" in node:
        cta = reader.mapping(node["cta"], node.line_of("cta"), "'cta'")
        reader.keys(cta, "'cta'", ["label", "url"], required=["label", "url"])
        links = (compile_link(cta, reader),)
    placement = node.get("placement", "corner")
    if placement not in PLACEMENTS:
        reader.fail(node.line_of("placement"),
                    f"unknown placement {placement!r}; expected one of {', '.join(PLACEMENTS)}")
    slot = ""
    if placement == "inline":
        if "slot" not in node:
            reader.fail(node.line_of("placement"), "placement 'inline' has no 'slot'; "
                        "expected 'slot', the CSS selector of the page's reserved element")
        slot = reader.text(node, "slot", max_length=120)
    elif "slot" in node:
        reader.fail(node.line_of("slot"), "'slot' without placement: inline; expected "
                    "placement: inline beside it, or no slot")
    return PopinTemplate(compile_template(node, "title", reader),
                         compile_template(node, "body", reader), links, placement, slot,
                         delay=compile_delay(node, reader),
                         offset=compile_offset(node, reader, placement))


def compile_offset(node: Mapping, reader: Reader, placement: str) -> tuple[int, int]:
    """offset: {x: 16, y: 80} — a corner card moved clear of what the page keeps there."""
    if "offset" not in node:
        return DEFAULT_OFFSET
    if placement not in CORNERS:
        reader.fail(node.line_of("offset"), "'offset' moves a corner card; expected placement "
                    "corner or corner_left beside it, or no offset")
    offset = reader.mapping(node["offset"], node.line_of("offset"), "'offset'")
    reader.keys(offset, "'offset'", ["x", "y"])
    found = []
    for axis, default in zip(("x", "y"), DEFAULT_OFFSET, strict=True):
        value = offset.get(axis, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_OFFSET:
            reader.fail(offset.line_of(axis), f"'offset.{axis}' is {value!r}; expected a whole "
                        f"number of pixels from 0 to {MAX_OFFSET}")
        found.append(value)
    return found[0], found[1]


def compile_delay(node: Mapping, reader: Reader) -> float:
    if "delay" not in node:
        return 0.0
    delay = reader.duration(node["delay"], node.line_of("delay"), "'delay'")
    if delay > MAX_DELAY_SECONDS:
        reader.fail(node.line_of("delay"), f"'delay' is {delay:g} seconds; expected at most "
                    f"{MAX_DELAY_SECONDS:g} (later, the moment that triggered it has passed)")
    return delay


# Where each key of a pop-in goes, for "'cta' belongs inside 'popin'".
place("popin", POPIN_KEYS)
place("cta", ("label", "url"))
