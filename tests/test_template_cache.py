"""The live path's template cache (mrqart.live.templates) against a real :memory: store."""

from __future__ import annotations

from typing import Any

from mrqart.live.templates import TemplateCache, key_of
from mrqart.store import Store

HEADER: dict[str, Any] = {"Project": "Study A", "SequenceName": "rest", "TR": 1300.0,
                          "SeriesNumber": 1, "StudyUID": "1.2.3"}


def test_loaded_from_the_store_matching_names_as_it_does() -> None:
    store = Store(":memory:")
    store.record_series(HEADER, n_files=10, source="import", session="s1")
    cache = TemplateCache()
    cache.load(store.templates())
    folded = {**HEADER, "Project": "study  a", "SequenceName": "REST"}
    assert cache.get(folded) == store.template("study  a", "REST") is not None
    assert cache.get({**HEADER, "SequenceName": "t1"}) is None


def test_a_learnt_series_is_the_template_until_the_store_answers() -> None:
    store = Store(":memory:")
    cache = TemplateCache()
    cache.learn(HEADER)
    assert cache.get(HEADER)["TR"] == 1300.0
    cache.load(store.templates())  # not written yet: still learnt
    assert cache.get(HEADER)["TR"] == 1300.0
    cache.learn({**HEADER, "TR": 2000.0})  # a name with a template keeps it
    assert cache.get(HEADER)["TR"] == 1300.0
    cache.update({key_of(HEADER): None})  # written, and the store's policy says no template
    assert cache.get(HEADER) is None
    store.record_series(HEADER, n_files=1, source="live", session="s2")
    cache.update({key_of(HEADER): store.template(*key_of(HEADER))})
    assert cache.get(HEADER) == store.template("Study A", "rest")
