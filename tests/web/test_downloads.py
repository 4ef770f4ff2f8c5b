"""Downloads of the web UI: the language parameter they take, the links that ask for them, and their content type."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.web.site import PASSWORD

pytestmark = pytest.mark.postgres

CSV_TYPE = "text/csv; charset=utf-8"


def csrf(page: str) -> str:
    return re.search(r'name="_csrf_token" value="([^"]+)"', page).group(1)


@pytest.fixture(scope="module")
def run_id(site) -> int:
    with httpx.Client(base_url=site.url, timeout=30) as finance:
        finance.post("/login", data={"username": "fin1", "password": PASSWORD})
        form = {"_csrf_token": csrf(finance.get("/contracts/C-1").text), "period_first": "2024-05-01", "period_last": "2024-05-31"}
        made = finance.post("/contracts/C-1/runs", data=form, follow_redirects=False)
        assert made.status_code == 303, made.text
        return int(made.headers["location"].rsplit("/", 1)[1])


def header_row(body: bytes) -> str:
    return body.decode("utf-8-sig").split("\r\n", 1)[0]


@pytest.mark.parametrize(
    ("query", "english"),
    [("?lang=en", True), ("?lang=zh-CN", False), ("?language=en", True), ("?language=zh-CN", False), ("?lang=en&language=zh-CN", True), ("", False)],
)
def test_csv_language_follows_lang_then_language(login, run_id, query: str, english: bool) -> None:
    response = login("fin1").get(f"/runs/{run_id}/export.csv{query}")
    assert response.status_code == 200
    assert header_row(response.content).startswith("Record," if english else "记录类型,")
    assert response.headers["content-disposition"].endswith(f'.{"en" if english else "zh-CN"}.csv"')


def test_csv_has_one_charset(login, run_id) -> None:
    assert login("fin1").get(f"/runs/{run_id}/export.csv?lang=en").headers["content-type"] == CSV_TYPE


def test_download_without_parameter_follows_page_language(login, run_id) -> None:
    """A user who switched the pages to English gets English downloads unless a link names another language."""
    finance = login("fin1")
    finance.get("/contracts/C-1?lang=en")
    assert header_row(finance.get(f"/runs/{run_id}/export.csv").content).startswith("Record,")
    assert header_row(finance.get(f"/runs/{run_id}/export.csv?lang=zh-CN").content).startswith("记录类型,")


def test_run_page_links_use_lang(login, run_id) -> None:
    page = login("fin1").get(f"/runs/{run_id}").text
    links = re.findall(r'href="(/runs/\d+/export\.\w+\?[^"]*)"', page)
    assert links == [f"/runs/{run_id}/export.{kind}?lang={language}" for kind in ("csv", "pdf") for language in ("zh-CN", "en")]
