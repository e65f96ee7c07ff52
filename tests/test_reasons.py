"""The one reason table: valid, documented, and every kernel reason in it."""
from pathlib import Path

from drgdip.codesets.reasons import STATUSES, markdown_table, reason_table
from drgdip.grouper.drg.kernel import KERNEL_REASONS


def test_codes_unique_and_statuses_known():
    codes = [r.code for r in reason_table()]
    assert len(codes) == len(set(codes))
    assert all(r.status in STATUSES or r.status == "" for r in reason_table())


def test_kernel_reasons_are_documented_with_a_status():
    table = {r.code: r for r in reason_table()}
    for code in KERNEL_REASONS:
        assert table[code].status in STATUSES and table[code].zh and table[code].en


def test_docs_page_matches_the_table():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "reasons.md").read_text(encoding="utf-8")
    assert doc.endswith(markdown_table())
