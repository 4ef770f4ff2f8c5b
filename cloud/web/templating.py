"""The Jinja2 environment shared by the web pages, the invoice PDFs and the renewal packages."""

from __future__ import annotations

import functools
from typing import Any

import jinja2
import markupsafe

from .i18n import LANGUAGES, format_date, format_money, format_number, translate

__all__ = ("PDF_FONTS", "environment", "render")

# WeasyPrint finds fonts through fontconfig by family name. Noto CJK comes from
# Debian's fonts-noto-cjk (installed by ./run); WenQuanYi is the usual other CJK font.
PDF_FONTS = '"Noto Sans CJK SC", "Noto Serif CJK SC", "WenQuanYi Zen Hei", "Source Han Sans SC", sans-serif'


@functools.cache
def environment() -> jinja2.Environment:
    """Return the template environment: autoescaped HTML, undefined names raise, i18n and money filters."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("valuegate.cloud.web", "templates"),
        autoescape=jinja2.select_autoescape(("html", "svg", "xml")),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["number"] = format_number
    env.globals["LANGUAGES"] = LANGUAGES
    # A trusted constant: Markup keeps autoescape from turning its quotes into &#34;.
    env.globals["PDF_FONTS"] = markupsafe.Markup(PDF_FONTS)
    return env


def render(name: str, language: str, **context: Any) -> str:
    """Render template ``name`` in ``language``; the template gets ``t``, ``money``, ``date`` and ``lang``."""

    def money(amount: Any, currency: str) -> str:
        return format_money(amount, currency, language)

    def date(value: Any) -> str:
        return format_date(value, language)

    def t(key: str, **values: Any) -> str:
        return translate(language, key, **values)

    return environment().get_template(name).render(lang=language, t=t, money=money, date=date, **context)
