"""Pop-in templates: jinja2's sandboxed, autoescaping environment, compiled at load time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Template, TemplateError, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup

from .schema import Reader
from .yamlsource import Mapping

PLACEMENTS = ("corner",)
POPIN_KEYS = ("title", "body", "cta", "placement")
# Where a call-to-action may lead: never javascript: or data: URLs.
SAFE_URL_SCHEMES = frozenset({"", "http", "https", "mailto", "tel"})

ENVIRONMENT = SandboxedEnvironment(autoescape=True, trim_blocks=True, lstrip_blocks=True)

# The card around the owner's content; the widget styles it inside its Shadow DOM.
CARD = ENVIRONMENT.from_string(
    '<div class="card" role="dialog" aria-live="polite" aria-label="{{ title }}">'
    '<button class="close" type="button" aria-label="Close" data-popin-dismiss>&times;</button>'
    '<p class="title">{{ title }}</p><div class="body">{{ body }}</div>'
    '{% if cta_url %}<a class="cta" href="{{ cta_url }}" data-popin-click>{{ cta_label }}</a>'
    "{% endif %}</div>"
)


class RenderError(Exception):
    """A template failed at render time (sandbox refusal, bad URL, ...)."""


@dataclass(frozen=True, slots=True)
class PopinTemplate:
    title: Template
    body: Template
    cta_label: Template | None
    cta_url: Template | None
    placement: str

    def render(self, context: dict[str, Any]) -> str:
        try:
            url = self.cta_url.render(context).strip() if self.cta_url else ""
            if urlsplit(url).scheme.lower() not in SAFE_URL_SCHEMES:
                raise RenderError(f"call-to-action URL {url[:40]!r} has a forbidden scheme")
            return CARD.render(
                title=self.title.render(context),
                body=Markup(self.body.render(context)),
                cta_label=self.cta_label.render(context) if self.cta_label else "",
                cta_url=url,
            )
        except TemplateError as error:
            raise RenderError(str(error)) from error


def _compile(node: Mapping, key: str, reader: Reader) -> Template:
    source = reader.text(node, key, max_length=5000)
    try:
        return ENVIRONMENT.from_string(source)
    except TemplateSyntaxError as error:
        # A block scalar (`body: |`) starts on the line after its key.
        offset = error.lineno if "\n" in source else 0
        reader.fail(node.line_of(key) + offset, f"template error in {key!r}: {error.message}")


def compile_popin(value: Any, line: int, reader: Reader) -> PopinTemplate:
    node = reader.mapping(value, line, "'popin'")
    reader.keys(node, "'popin'", POPIN_KEYS, required=["title", "body"])
    cta_label = cta_url = None
    if "cta" in node:
        cta = reader.mapping(node["cta"], node.line_of("cta"), "'cta'")
        reader.keys(cta, "'cta'", ["label", "url"], required=["label", "url"])
        cta_label, cta_url = _compile(cta, "label", reader), _compile(cta, "url", reader)
    placement = node.get("placement", "corner")
    if placement not in PLACEMENTS:
        reader.fail(node.line_of("placement"),
                    f"unknown placement {placement!r}; expected one of {', '.join(PLACEMENTS)}")
    return PopinTemplate(_compile(node, "title", reader), _compile(node, "body", reader),
                         cta_label, cta_url, placement)
