"""The auditor guides, in English and Chinese, say that the contract files are unsigned, how to check their digests, and where earlier revisions are."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from tests.verify.bundles import signed_bundle
from valuegate.cloud.bundle import guide_text

DOCS = Path(__file__).parents[2] / "docs"

# Sentences each guide must carry: the prices come from an unsigned file, and the digest ties them to the signed contract.
# The auditor guides also state that keys.json is unsigned and that each gateway's first key is compared with the plant's record.
REQUIRED = {
    "en": ["no gateway signature covers", "RFC 8785", "contract_digest", "the digest on the signed contract",
           "`keys.json`\n(the gateway keys)", "valuegate keys export-public", "first key", "rotation statement"],
    "zh-CN": ["不在任何网关签名的覆盖范围内", "RFC 8785", "contract_digest", "已签署合同",
              "`keys.json`（网关密钥）", "valuegate keys export-public", "首个密钥", "轮换声明"],
}
REQUIRED_IN_BUNDLE = {
    "en": ["no gateway signature covers", "RFC 8785", "contract_digest", "the digest printed on the",
           "valuegate keys export-public", "first key", "rotation statement"],
    "zh-CN": ["不在任何网关签名的覆盖范围内", "RFC 8785", "contract_digest", "已签署合同",
              "valuegate keys export-public", "首个密钥", "轮换声明"],
}
# The bundle guide's former claim that the plant's gateway signed every voucher, which keys.json alone cannot show.
BUNDLE_KEY_WITHDRAWN = {"en": "signed by a gateway of your plant", "zh-CN": "由贵厂的网关签名"}
# The claim that re-pricing catches a forged price, which it cannot while contract.json is unsigned.
WITHDRAWN = {
    "en": "Forgery is caught by the signatures, the chain and the re-pricing.",
    "zh-CN": "伪造由签名、哈希链和重新计价发现。",
}
# The claim that a registered key signed every voucher, which a bundle alone cannot show.
KEY_WITHDRAWN = {"en": "signed by a registered key of the plant's gateway", "zh-CN": "由工厂网关已登记的密钥签名"}
# Every guide states where the earlier contract revisions are and that a document is never re-priced with contract.json in their place.
REVISIONS = {
    "en": ["contracts/<id>/revision-<n>.json", "`contract_revision`", "`revisions`"],
    "zh-CN": ["contracts/<id>/revision-<n>.json", "`contract_revision`", "`revisions`", "绝不改用 `contract.json`"],
}
REVISIONS_NEVER_FALL_BACK = {"auditor": "never with `contract.json` instead", "bundle": "never against `contract.json` instead"}
# The advice to fetch an earlier revision from the vendor, which the bundle now carries itself.
REVISION_WITHDRAWN = {"en": "Ask the vendor for that revision", "zh-CN": "请向供应商索取该修订版"}


@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_auditor_guide_explains_contract_digest(language):
    name = "auditor-guide.md" if language == "en" else "auditor-guide.zh-CN.md"
    text = (DOCS / name).read_text(encoding="utf-8")
    for phrase in REQUIRED[language]:
        assert phrase in text, (name, phrase)
    assert WITHDRAWN[language] not in text
    assert KEY_WITHDRAWN[language] not in text
    assert "pip install valuegate\n" not in text
    for phrase in REVISIONS[language]:
        assert phrase in text, (name, phrase)
    if language == "en":
        assert REVISIONS_NEVER_FALL_BACK["auditor"] in text
    assert REVISION_WITHDRAWN[language] not in text


@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_bundle_guide_explains_contract_digest(tmp_path, language):
    bundle = signed_bundle(tmp_path)
    shipped = zipfile.ZipFile(bundle["zip"]).read(f"GUIDE.{language}.md").decode("utf-8")
    assert shipped == guide_text(language)
    for phrase in REQUIRED_IN_BUNDLE[language]:
        assert phrase in shipped, (language, phrase)
    assert BUNDLE_KEY_WITHDRAWN[language] not in shipped
    assert "pip install valuegate\n" not in shipped
    for phrase in REVISIONS[language]:
        assert phrase in shipped, (language, phrase)
    if language == "en":
        assert REVISIONS_NEVER_FALL_BACK["bundle"] in shipped
    assert REVISION_WITHDRAWN[language] not in shipped


# What each auditor guide advises on a file the manifest does not list, and of names that leave the bundle.
UNLISTED_ADVICE = {
    "en": ["## Files the manifest does not list", "`checked: false`", "Treat its\n  content as unverified", "`../../evil.txt`",
           "the manifest labels it contract revision 2, but its file name gives\n  revision 1"],
    "zh-CN": ["## 清单未列出的文件", "`checked: false`", "请把其内容视为未经核验", "`../../evil.txt`",
              "the manifest labels it contract revision 2, but its file name gives revision 1"],
}


@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_auditor_guide_explains_unlisted_files(language):
    from valuegate.verify import UNLISTED

    name = "auditor-guide.md" if language == "en" else "auditor-guide.zh-CN.md"
    text = (DOCS / name).read_text(encoding="utf-8")
    # The guide quotes the note the command prints, so an auditor can search for it.
    assert UNLISTED in text.replace("\n  ", " "), name
    for phrase in UNLISTED_ADVICE[language]:
        assert phrase in text, (name, phrase)


@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_bundle_guide_quotes_unlisted_note(tmp_path, language):
    from valuegate.verify import UNLISTED

    bundle = signed_bundle(tmp_path)
    shipped = zipfile.ZipFile(bundle["zip"]).read(f"GUIDE.{language}.md").decode("utf-8")
    # The guide inside the bundle quotes the note verify prints for a file the cloud did not put there.
    text = shipped.replace("\n", " ")
    assert f"`NOTE  <{'file' if language == 'en' else '文件'}>`" in text
    assert f"`{UNLISTED}`" in text


@pytest.mark.parametrize(
    ("language", "sections"),
    [("en", ["Evidence root: the minute records behind a voucher", "verify_bundle.js"]),
     ("zh-CN", ["证据根：凭证背后的逐分钟记录", "第二个校验器（Node.js）", "verify_bundle.js"])],
)
def test_bundle_guide_points_to_evidence_and_second_verifier(language, sections):
    """The bundle cannot show that an evidence root matches its records, so its guide states this and points to the recipe."""
    shipped = guide_text(language)
    assert "merkle_root" in shipped
    assert "valuegate/minute/v1" in shipped
    for section in sections:
        assert section in shipped, (language, section)
    auditor = (DOCS / ("auditor-guide.md" if language == "en" else "auditor-guide.zh-CN.md")).read_text(encoding="utf-8")
    # Each section the bundle guide names exists in the auditor guide.
    for section in sections[:-1]:
        assert f"## {section}" in auditor, (language, section)
