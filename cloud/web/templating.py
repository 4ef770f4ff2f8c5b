"""The Jinja2 environment shared by the web pages, the invoice PDFs and the renewal packages."""

from __future__ import annotations

import functools
import re
from typing import Any

import jinja2
import markupsafe

from valuegate.cloud.renewal.targets import mask_url

from valuegate.cloud.actors import actor_label

from .capital import capital_amount
from .i18n import LANGUAGES, format_date, format_money, format_number, translate

__all__ = ("PDF_FONTS", "environment", "keep_words", "render")

# WeasyPrint finds fonts through fontconfig by family name. Noto CJK comes from
# Debian's fonts-noto-cjk (installed by ./run); WenQuanYi is the usual other CJK font.
PDF_FONTS = '"Noto Sans CJK SC", "Noto Serif CJK SC", "WenQuanYi Zen Hei", "Source Han Sans SC", sans-serif'


# A header may break before an opening bracket: "平均每运行日增益" / "（置信区间下限）".
_BEFORE_BRACKET = re.compile(r"(?=[（(])")


# Chinese text takes full-width punctuation with no spaces around it, while English text keeps ASCII punctuation.
_PUNCTUATION = {
    "zh-CN": {"colon": "：", "comma": "，", "paren_open": "（", "paren_close": "）"},
    "en": {"colon": ": ", "comma": ", ", "paren_open": " (", "paren_close": ")"},
}


def keep_words(text: str) -> markupsafe.Markup:
    """Return a table header whose words never break inside, for PDF tables.

    Chinese has no spaces, so WeasyPrint breaks a narrow column between any two
    characters (``承诺目`` / ``标``); WeasyPrint 70 ignores ``word-break: keep-all``.
    Each space-separated word, and each part before an opening bracket, becomes
    a ``<span class="word">`` that the page's CSS keeps on one line.
    """
    words = []
    for word in str(text).split():
        parts = [markupsafe.Markup('<span class="word">{}</span>').format(part) for part in _BEFORE_BRACKET.split(word) if part]
        words.append(markupsafe.Markup("<wbr>").join(parts))
    return markupsafe.Markup(" ").join(words)


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
    env.filters["keep_words"] = keep_words
    env.filters["masked_url"] = mask_url
    env.globals["LANGUAGES"] = LANGUAGES
    # A trusted constant: Markup keeps autoescape from turning its quotes into &#34;.
    env.globals["PDF_FONTS"] = markupsafe.Markup(PDF_FONTS)
    return env


def render(name: str, language: str, **context: Any) -> str:
    """Render template ``name`` in ``language``.

    The template gets ``t``, ``money`` (amount, currency and the contract's optional rounding step), ``date``,
    ``actor`` (a stored actor id and its user's name, as the text a reader sees), ``capital`` (RMB in capital numerals),
    ``lang`` and the punctuation of the
    language: ``colon`` (after a label), ``comma`` (between clauses), ``list_comma`` (between list items) and
    ``paren_open``/``paren_close`` (around an aside, with the space English puts before it).
    """

    def money(amount: Any, currency: str, rounding: str | None = None) -> str:
        return format_money(amount, currency, language, rounding)

    def date(value: Any) -> str:
        return format_date(value, language)

    def t(key: str, **values: Any) -> str:
        return translate(language, key, **values)

    def actor(actor_id: str | None, name: str | None = None) -> str:
        return actor_label(actor_id, name, language)

    return environment().get_template(name).render(
        lang=language, t=t, money=money, date=date, actor=actor, capital=capital_amount, list_comma=translate(language, "reason.list_comma"),
        **_PUNCTUATION[language], **context,
    )
