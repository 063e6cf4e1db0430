"""The interactive figures: their data, their HTML, and (in headless Chromium) their JS.

The Python side is checked against lmcourse.decoding; the JavaScript is run in a
real browser where Chromium and Playwright are installed, and its probabilities
must equal decoding's filtered ones to 1e-6 for every slider setting tried.
"""

import itertools
import json
import re
import shutil

import pytest
import torch

from lmcourse.decoding import filter_logits, sample_next
from lmcourse.scaling_laws import LossLaw, compute_optimal
from lmcourse.widgets import (
    attention_data,
    attention_explorer,
    compute_data,
    compute_explorer,
    filtered_distribution,
    readable_label,
    rounded_law,
    temperature_data,
    temperature_explorer,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]


def _logits(V=12, seed=0):
    return torch.randn(V, generator=torch.Generator().manual_seed(seed)) * 2


def _embedded(html: str) -> dict:
    return json.loads(re.search(r'<script type="application/json">(.*?)</script>', html, re.S).group(1))


def test_filtered_distribution_is_what_sample_next_draws_from():
    z = _logits(8)
    for t, k, p in [(1.0, None, None), (0.5, 3, None), (2.0, None, 0.7), (0.8, 5, 0.5), (1.0, 1, None)]:
        probs = filtered_distribution(z, t, k, p)
        assert abs(probs.sum().item() - 1) < 1e-12
        # draws from sample_next land only on tokens with probability > 0, with those frequencies
        g = torch.Generator().manual_seed(1)
        draws = sample_next(z[None].repeat(20000, 1), temperature=t, top_k=k, top_p=p, generator=g)
        freq = torch.bincount(draws, minlength=8).double() / 20000
        assert torch.all(freq[probs == 0] == 0)
        assert (freq - probs).abs().max() < 0.02


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_filtered_distribution_is_the_softmax_of_decodings_filter_chain(dtype):
    z = _logits(10, seed=3).to(dtype)
    for t, k, p in [(1.0, None, None), (0.5, 3, None), (2.0, None, 0.7), (0.8, 5, 0.5), (0, 4, 0.3), (1.3, 10, 1.0)]:
        expected = torch.softmax(filter_logits(z.double()[None], t, k, p), dim=-1)[0]
        assert torch.equal(filtered_distribution(z, t, k, p), expected)  # the same chain, bit for bit


def test_filtered_distribution_greedy_and_errors():
    z = torch.tensor([1.0, 3.0, 3.0, 0.0])
    assert filtered_distribution(z, 0).tolist() == [0.0, 1.0, 0.0, 0.0]  # ties to the lower id
    with pytest.raises(ValueError, match="one row"):
        filtered_distribution(z[None])


def test_temperature_data_rounds_and_checks():
    z = torch.tensor([1.23456789, -0.00001, 2.0])
    d = temperature_data(z, ["a", " ", "\n"], top_k=10)
    assert d["logits"] == [1.2346, 0.0, 2.0] and str(d["logits"][1]) == "0.0"  # no -0.0
    assert d["labels"] == ["a", "␣", "\\n"] and d["top_k"] == 3 and d["top_p"] == 1.0
    with pytest.raises(ValueError, match="labels"):
        temperature_data(z, ["a"])
    with pytest.raises(ValueError, match="finite"):
        temperature_data(torch.tensor([0.0, float("-inf")]), ["a", "b"])
    with pytest.raises(ValueError, match="temperature"):
        temperature_data(z, ["a", "b", "c"], temperature=-1)


def test_temperature_explorer_html_is_self_contained_and_deterministic():
    z = _logits()
    labels = [chr(97 + i) for i in range(12)]
    html = temperature_explorer(z, labels, max_bars=5, title="a < b").data
    assert html == temperature_explorer(z.clone(), list(labels), max_bars=5, title="a < b").data
    assert html != temperature_explorer(z + 1, labels, max_bars=5).data  # id and data follow the data
    assert 'data-lmcourse-interactive="temperature"' in html
    assert len(re.findall(r'<input type="range" name="(temperature|top_k|top_p)"', html)) == 3
    assert not re.search(r"https?://|src=|import\(|fetch\(|XMLHttpRequest", html)  # no requests
    assert "a &lt; b" in html
    ids = set(re.findall(r'id="(lmc-[^"]+)"', html))
    assert len(ids) == 1 and ids.pop() in html.split("<script>")[1]  # the script finds its own element
    assert _embedded(html) == temperature_data(z, labels, max_bars=5)


def test_embedded_json_cannot_close_the_script():
    html = temperature_explorer(torch.zeros(2), ["</script>", "b"]).data
    assert html.count("</script>") == 2  # only the two real closing tags
    assert _embedded(html)["labels"][0] == "</script>"


def test_readable_label():
    assert [readable_label(s) for s in ["x", " ", "\n", "\t", "", "ab c"]] == ["x", "␣", "\\n", "\\t", "''", "ab␣c"]


def test_attention_data_and_html():
    w = torch.softmax(torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0)), -1)  # (L, H, T, T)
    d = attention_data(w, list("abcd"))
    assert (d["layers"], d["heads"], d["T"], d["query"]) == (2, 3, 4, 3)
    flat = torch.tensor(d["weights"]).reshape(2, 3, 4, 4)
    assert torch.equal(flat, (w * 1000).round().long())  # [layer][head][query][key]
    assert attention_data(w[0], list("abcd"))["layers"] == 1  # (H, T, T) is one layer
    html = attention_explorer(w, list("abcd"), layer_names=["first", "second"]).data
    assert html == attention_explorer(w.clone(), list("abcd"), layer_names=["first", "second"]).data
    assert 'data-lmcourse-interactive="attention"' in html
    assert html.count("<select") == 2 and 'name="query"' in html and ">second</option>" in html
    assert not re.search(r"https?://|src=|fetch\(", html)
    for bad, msg in [(torch.ones(4, 4), "shape"), (torch.ones(1, 4, 3), "shape")]:
        with pytest.raises(ValueError, match=msg):
            attention_data(bad, list("abcd"))
    with pytest.raises(ValueError, match="labels"):
        attention_data(w, list("abc"))
    with pytest.raises(ValueError, match="query"):
        attention_data(w, list("abcd"), query=4)


# --- the JavaScript, in a real browser ---------------------------------------------


@pytest.fixture(scope="module")
def page():
    if CHROMIUM is None:
        pytest.skip("no Chromium installed (apt-get install chromium); widget JS check skipped")
    playwright = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pg = browser.new_page()
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.on("request", lambda r: r.url.startswith(("data:", "about:")) or errors.append(f"request: {r.url}"))
        pg.errors = errors
        yield pg
        browser.close()


def _set(page, selector: str, value) -> None:
    page.eval_on_selector(selector, """(e, v) => { e.value = v;
        e.dispatchEvent(new Event('input', {bubbles: true})); }""", str(value))


def test_temperature_widget_js_matches_decoding(page):
    z = _logits(30, seed=3)
    labels = [f"t{i}" for i in range(30)]
    html = temperature_explorer(z, labels, max_bars=30).data
    page.set_content(f"<html><body>{html}</body></html>")
    rounded = torch.tensor(temperature_data(z, labels)["logits"], dtype=torch.float64)
    root = "[data-lmcourse-interactive=temperature]"
    widths = []
    for t, k, p in [(1.0, 30, 1.0), (0.5, 30, 1.0), (2.0, 30, 1.0), (1.0, 5, 1.0), (1.0, 30, 0.6),
                    (0.7, 8, 0.8), (0.0, 30, 1.0), (3.0, 2, 1.0), (1.5, 12, 0.95)]:
        _set(page, f"{root} input[name=temperature]", t)
        _set(page, f"{root} input[name=top_k]", k)
        _set(page, f"{root} input[name=top_p]", p)
        js = torch.tensor(json.loads(page.get_attribute(root, "data-probs")), dtype=torch.float64)
        ref = filtered_distribution(rounded, t, k if k < 30 else None, p if p < 1 else None)
        assert (js - ref).abs().max() < 1e-6, (t, k, p)
        assert torch.equal(js > 0, ref > 0), (t, k, p)  # the same tokens kept
        rows = page.eval_on_selector_all(f"{root} .lmc-row[data-token-id]", """rs => rs.map(r =>
            [+r.dataset.tokenId, +r.dataset.prob, r.querySelector('.lmc-bar').style.width])""")
        assert len(rows) == 30
        assert all(abs(prob - ref[i].item()) < 1e-6 for i, prob, _ in rows)
        widths.append([w for _, _, w in rows])
    assert all(a != b for a, b in itertools.pairwise(widths))  # every change of setting redraws the bars
    summary = page.inner_text(f"{root} .lmc-summary")
    assert summary.startswith(f"{int((ref > 0).sum())} of 30 tokens can be drawn")  # the last setting
    assert not page.errors, page.errors


def test_attention_widget_js_follows_the_controls(page):
    w = torch.softmax(torch.randn(2, 2, 5, 5, generator=torch.Generator().manual_seed(0)), -1)
    w = w.masked_fill(~torch.ones(5, 5, dtype=torch.bool).tril(), 0)
    w = w / w.sum(-1, keepdim=True)
    html = attention_explorer(w, list("abcde")).data
    page.set_content(f"<html><body>{html}</body></html>")
    root = "[data-lmcourse-interactive=attention]"
    for layer, head, query in [(0, 0, 4), (1, 0, 4), (1, 1, 2), (0, 1, 0)]:
        page.select_option(f"{root} select[name=layer]", str(layer))
        page.select_option(f"{root} select[name=head]", str(head))
        _set(page, f"{root} input[name=query]", query)
        row = torch.tensor(json.loads(page.get_attribute(root, "data-row")), dtype=torch.float64)
        assert torch.allclose(row, (w[layer, head, query].double() * 1000).round() / 1000, atol=1e-12)
        assert f"layer {layer + 1}, head {head + 1}: position {query} " in page.inner_text(f"{root} .lmc-summary")
    page.click(f"{root} .lmc-seq span:nth-child(2)")  # clicking a token picks it as the query
    assert page.eval_on_selector(f"{root} input[name=query]", "e => e.value") == "1"
    assert not page.errors, page.errors


LAW = LossLaw(E=1.2345678, A=55.5, alpha=0.4123456, B=222.2, beta=0.3123456)


def test_compute_data_and_html():
    d = compute_data(LAW, log10_budget=14, points=[(1.00001e13, 56640.4)])
    assert d["law"] == {"E": 1.23457, "A": 55.5, "alpha": 0.412346, "B": 222.2, "beta": 0.312346}
    assert rounded_law(d) == LossLaw(**d["law"]) and d["points"] == [[1e13, 56640.0]]
    html = compute_explorer(LAW, log10_budget=14, title="C < 1e17").data
    assert html == compute_explorer(LossLaw(**vars(LAW)), log10_budget=14, title="C < 1e17").data
    assert 'data-lmcourse-interactive="compute"' in html and html.count("<input") == 1
    assert "C &lt; 1e17" in html and not re.search(r"https?://|src=|fetch\(", html)
    assert _embedded(html) == compute_data(LAW, log10_budget=14)
    with pytest.raises(ValueError, match="low"):
        compute_data(LAW, log10_budget=18, low=11, high=17)
    with pytest.raises(ValueError, match="positive"):
        compute_data(LossLaw(E=1, A=1, alpha=-0.1, B=1, beta=0.3))


def test_compute_widget_js_matches_compute_optimal(page):
    html = compute_explorer(LAW, log10_budget=13, points=[(1e13, 5e4)]).data
    page.set_content(f"<html><body>{html}</body></html>")
    root = "[data-lmcourse-interactive=compute]"
    law = rounded_law(compute_data(LAW))
    for lc in (11, 12.35, 13, 15.5, 17):
        _set(page, f"{root} input[name=budget]", lc)
        n, d, loss = json.loads(page.get_attribute(root, "data-optimum"))
        ref_n, ref_d = compute_optimal(law, 10.0**lc)
        assert abs(n / ref_n - 1) < 1e-9 and abs(d / ref_d - 1) < 1e-9, lc
        assert abs(loss - law(ref_n, ref_d)) < 1e-9, lc
        assert "per parameter" in page.inner_text(f"{root} .lmc-summary")
    assert not page.errors, page.errors
