"""Interactive figures for the static HTML book: self-contained HTML + inline JS.

Each function returns an :class:`IPython.display.HTML` whose ``text/html`` output
Jupyter shows in a notebook and Jupyter Book copies into the built page, where the
inline script runs. Nothing is fetched from anywhere: the data are embedded as JSON
and the JavaScript draws plain ``<div>`` bars or a ``<canvas>``. The output is
deterministic (numbers rounded, element ids derived from a hash of the data), so a
stored notebook output compares equal under strict nbval.

* :func:`temperature_explorer`: next-token probabilities under temperature, top-k
  and top-p, with a slider for each. The JavaScript filters exactly as
  :func:`lmcourse.decoding.filter_logits` does, the chain that
  :func:`lmcourse.decoding.sample_next` draws from (temperature, then top-k, then
  top-p, ties to the lower id); :func:`filtered_distribution` is the Python reference.
* :func:`attention_explorer`: attention weights ``(H, T, T)`` or ``(L, H, T, T)``
  as a heatmap, with a layer and head selector and a query position slider.
* :func:`compute_explorer`: a fitted scaling law (chapter 12) with a compute-budget
  slider: the IsoFLOP curve, the compute-optimal ``N*`` and ``D*`` (as
  :func:`lmcourse.scaling_laws.compute_optimal` gives them) and the predicted loss.

Every figure's outer element carries ``data-lmcourse-interactive="<name>"`` and
holds ``<input>``/``<select>`` controls (the browser test of the book looks for them).
"""

from __future__ import annotations

import hashlib
import html as _html
import json
from typing import Sequence

import torch
from IPython.display import HTML

from .decoding import filter_logits
from .scaling_laws import LossLaw

LOGIT_DECIMALS = 4  # logits are embedded rounded to this many decimals
WEIGHT_SCALE = 1000  # attention weights are embedded as integers in 1/1000


def readable_label(token: str) -> str:
    """A token as a reader can see it: ``" " -> "␣"``, ``"\\n" -> "\\\\n"``, tabs likewise.

    >>> [readable_label(t) for t in ["a", " ", "\\n"]]
    ['a', '␣', '\\\\n']
    """
    return token.replace("\n", "\\n").replace("\t", "\\t").replace(" ", "␣") or "''"


def filtered_distribution(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                          top_p: float | None = None) -> torch.Tensor:
    """The distribution :func:`lmcourse.decoding.sample_next` draws from, for one row ``(V,)``.

    :func:`lmcourse.decoding.filter_logits` (temperature, then top-k, then top-p),
    then softmax; ``temperature = 0`` is the one-hot greedy choice. Computed in float64.

    >>> filtered_distribution(torch.tensor([2.0, 1.0, 0.0]), top_k=1).tolist()
    [1.0, 0.0, 0.0]
    """
    if logits.dim() != 1:
        raise ValueError(f"logits must be one row (V,), got shape {tuple(logits.shape)}")
    z = filter_logits(logits.double()[None], temperature, top_k, top_p)  # (1, V)
    return torch.softmax(z, dim=-1)[0]  # (V,)


def _element_id(kind: str, payload: str) -> str:
    return f"lmc-{kind}-{hashlib.sha1(payload.encode('utf-8')).hexdigest()[:12]}"


def _dumps(data: dict) -> str:
    # Inside <script>, "</" would end the element: escape it (valid JSON either way).
    return json.dumps(data, ensure_ascii=True, separators=(",", ":"), sort_keys=True).replace("</", "<\\/")


def temperature_data(logits: torch.Tensor, labels: Sequence[str], *, temperature: float = 1.0,
                     top_k: int | None = None, top_p: float | None = None, max_bars: int = 15) -> dict:
    """The JSON-ready data that :func:`temperature_explorer` embeds.

    ``logits`` ``(V,)`` rounded to :data:`LOGIT_DECIMALS` decimals (the figure and any
    check of it use these rounded values), labels made readable, initial settings.
    """
    if logits.dim() != 1:
        raise ValueError(f"logits must be one row (V,), got shape {tuple(logits.shape)}")
    V = logits.shape[0]
    if len(labels) != V:
        raise ValueError(f"got {len(labels)} labels for {V} logits")
    if not torch.isfinite(logits).all():
        raise ValueError("logits must be finite (filter with the sliders, not beforehand)")
    if temperature < 0 or (top_k is not None and top_k < 1) or (top_p is not None and not 0 < top_p <= 1):
        raise ValueError(f"need temperature >= 0, top_k >= 1, 0 < top_p <= 1; got {temperature}, {top_k}, {top_p}")
    if max_bars < 1:
        raise ValueError(f"max_bars must be >= 1, got {max_bars}")
    z = [round(float(x), LOGIT_DECIMALS) + 0.0 for x in logits.detach().cpu().double()]  # + 0.0: no -0.0
    return {
        "logits": z,
        "labels": [readable_label(s) for s in labels],
        "temperature": float(temperature),
        "top_k": int(min(top_k, V)) if top_k is not None else V,
        "top_p": float(top_p) if top_p is not None else 1.0,
        "max_bars": int(min(max_bars, V)),
    }


_TEMPERATURE_JS = (
    r"""
(function () {
  function filtered(z, T, k, p) {  // = lmcourse.widgets.filtered_distribution
    var V = z.length, i;
    var order = z.map(function (_, j) { return j; });
    order.sort(function (a, b) { return (z[b] - z[a]) || (a - b); });  // descending, ties to lower id
    var probs = new Array(V).fill(0);
    if (T === 0) { probs[order[0]] = 1; return probs; }  // greedy
    var n = Math.min(k, V);  // top-k: the n first of the order
    var m = z[order[0]] / T, s = 0, e = [];
    for (i = 0; i < n; i++) { e.push(Math.exp(z[order[i]] / T - m)); s += e[i]; }
    var keep = n;
    if (p < 1) {  // top-p: keep i iff the mass ranked above it is < p
      var before = 0;
      for (i = 0; i < n; i++) { if (!(before < p)) { keep = i; break; } before += e[i] / s; }
    }
    var s2 = 0;
    for (i = 0; i < keep; i++) s2 += e[i];
    for (i = 0; i < keep; i++) probs[order[i]] = e[i] / s2;
    return probs;
  }
  function setup(root) {
    if (root.getAttribute("data-ready")) return;
    root.setAttribute("data-ready", "1");
    var d = JSON.parse(root.querySelector("script[type='application/json']").textContent);
    var z = d.logits, V = z.length;
    var order = z.map(function (_, j) { return j; });
    order.sort(function (a, b) { return (z[b] - z[a]) || (a - b); });
    var base = filtered(z, 1, V, 1);
    var q = function (sel) { return root.querySelector(sel); };
    var tIn = q("input[name=temperature]"), kIn = q("input[name=top_k]"), pIn = q("input[name=top_p]");
    var bars = q(".lmc-bars");
    var rows = [];
    for (var r = 0; r < d.max_bars; r++) {
      var id = order[r];
      var row = document.createElement("div");
      row.className = "lmc-row";
      row.setAttribute("data-token-id", String(id));
      row.innerHTML = '<span class="lmc-label"></span><span class="lmc-track"><span class="lmc-base"></span>' +
        '<span class="lmc-bar"></span></span><span class="lmc-num"></span>';
      row.querySelector(".lmc-label").textContent = d.labels[id];
      row.querySelector(".lmc-base").style.width = (100 * base[id]).toFixed(2) + "%";
      bars.appendChild(row);
      rows.push(row);
    }
    var rest = document.createElement("div");
    rest.className = "lmc-row lmc-rest";
    rest.innerHTML = '<span class="lmc-label">others</span><span class="lmc-track">"""
    r"""<span class="lmc-bar"></span></span><span class="lmc-num"></span>';
    if (d.max_bars < V) bars.appendChild(rest);
    function update() {
      var T = parseFloat(tIn.value), k = parseInt(kIn.value, 10), p = parseFloat(pIn.value);
      var probs = filtered(z, T, k, p), kept = 0, H = 0, shown = 0;
      probs.forEach(function (x) { if (x > 0) { kept += 1; H -= x * Math.log(x); } });
      rows.forEach(function (row) {
        var x = probs[parseInt(row.getAttribute("data-token-id"), 10)];
        shown += x;
        row.setAttribute("data-prob", String(x));
        row.querySelector(".lmc-bar").style.width = (100 * x).toFixed(2) + "%";
        row.querySelector(".lmc-num").textContent = x.toFixed(3);
        row.classList.toggle("lmc-removed", x === 0);
      });
      rest.querySelector(".lmc-bar").style.width = (100 * Math.max(0, 1 - shown)).toFixed(2) + "%";
      rest.querySelector(".lmc-num").textContent = Math.max(0, 1 - shown).toFixed(3);
      q(".lmc-t").textContent = T === 0 ? "0 (greedy)" : T.toFixed(2);
      q(".lmc-k").textContent = k >= V ? V + " (off)" : String(k);
      q(".lmc-p").textContent = p >= 1 ? "1.00 (off)" : p.toFixed(2);
      q(".lmc-summary").textContent = kept + " of " + V + " tokens can be drawn; entropy " + H.toFixed(2) + " nats";
      root.setAttribute("data-probs", JSON.stringify(probs));
    }
    [tIn, kIn, pIn].forEach(function (el) { el.addEventListener("input", update); });
    update();
  }
  document.querySelectorAll("[id='__ID__']").forEach(setup);
})();
"""
)

_STYLE = (
    """
<style>
.lmc-widget{font-family:system-ui,sans-serif;font-size:13px;border:1px solid #ccc;border-radius:6px;"""
    """padding:10px;margin:8px 0;max-width:640px;}
.lmc-widget label{display:inline-block;margin:2px 14px 2px 0;}
.lmc-widget input[type=range]{vertical-align:middle;width:150px;}
.lmc-widget .lmc-row{display:flex;align-items:center;height:18px;}
.lmc-widget .lmc-label{width:48px;text-align:right;padding-right:6px;font-family:monospace;}
.lmc-widget .lmc-track{position:relative;flex:1;height:13px;background:#f2f2f2;}
.lmc-widget .lmc-base{position:absolute;left:0;top:0;height:100%;border-right:2px solid #888;box-sizing:border-box;}
.lmc-widget .lmc-bar{position:absolute;left:0;top:2px;height:9px;background:#3a6ea5;}
.lmc-widget .lmc-rest .lmc-bar{background:#999;}
.lmc-widget .lmc-removed .lmc-label{color:#bbb;text-decoration:line-through;}
.lmc-widget .lmc-num{width:52px;text-align:right;font-family:monospace;}
.lmc-widget .lmc-summary,.lmc-widget .lmc-note{margin:6px 0;color:#444;}
.lmc-widget .lmc-seq span{font-family:monospace;padding:1px 0;cursor:pointer;}
</style>
"""
)


def temperature_explorer(logits: torch.Tensor, labels: Sequence[str], *, temperature: float = 1.0,
                         top_k: int | None = None, top_p: float | None = None, max_bars: int = 15,
                         title: str = "") -> HTML:
    """An interactive bar chart of next-token probabilities under temperature, top-k, top-p.

    ``logits`` ``(V,)`` for one position, ``labels`` the ``V`` token strings. The
    reader moves the sliders; the bars show the distribution
    :func:`filtered_distribution` gives (the ``max_bars`` most likely tokens, in
    order, plus the rest as "others"), over a grey outline at temperature 1.

    >>> z = torch.tensor([2.0, 1.0, 0.0])
    >>> html = temperature_explorer(z, ["a", "b", "c"]).data
    >>> 'data-lmcourse-interactive="temperature"' in html and html.count("<input") == 3
    True
    """
    data = temperature_data(logits, labels, temperature=temperature, top_k=top_k, top_p=top_p, max_bars=max_bars)
    payload = _dumps(data)
    eid = _element_id("temperature", payload)
    V = len(data["logits"])
    html = (
        f"""{_STYLE}<div class="lmc-widget" id="{eid}" data-lmcourse-interactive="temperature">
<div class="lmc-note">{_html.escape(title)}</div>
<label>temperature <input type="range" name="temperature" min="0" max="3" step="0.05" """
        f"""value="{data['temperature']}"> <span class="lmc-t"></span></label>
<label>top-k <input type="range" name="top_k" min="1" max="{V}" step="1" value="{data['top_k']}"> """
        f"""<span class="lmc-k"></span></label>
<label>top-p <input type="range" name="top_p" min="0.05" max="1" step="0.01" value="{data['top_p']}"> """
        f"""<span class="lmc-p"></span></label>
<div class="lmc-summary"></div>
<div class="lmc-bars"></div>
<div class="lmc-note">Bars: probability after temperature, top-k, top-p (as <code>sample_next</code>); """
        f"""grey outline: the model at temperature 1.</div>
<script type="application/json">{payload}</script>
<script>{_TEMPERATURE_JS.replace("__ID__", eid)}</script>
</div>"""
    )
    return HTML(html)


def attention_data(weights: torch.Tensor, labels: Sequence[str], *, query: int | None = None) -> dict:
    """The JSON-ready data that :func:`attention_explorer` embeds.

    ``weights`` ``(H, T, T)`` or ``(L, H, T, T)``; each entry becomes an integer in
    units of 1/:data:`WEIGHT_SCALE`, flattened as ``[layer][head][query][key]``.
    """
    if weights.dim() == 3:
        weights = weights[None]
    if weights.dim() != 4 or weights.shape[-1] != weights.shape[-2]:
        raise ValueError(f"weights must be (H, T, T) or (L, H, T, T), got shape {tuple(weights.shape)}")
    L, H, T, _ = weights.shape
    if len(labels) != T:
        raise ValueError(f"got {len(labels)} labels for T = {T} positions")
    w = (weights.detach().cpu().double().clamp(0, 1) * WEIGHT_SCALE).round().long()  # (L, H, T, T)
    q = T - 1 if query is None else query
    if not 0 <= q < T:
        raise ValueError(f"query must be in [0, {T}), got {q}")
    return {"layers": L, "heads": H, "T": T, "scale": WEIGHT_SCALE, "query": q,
            "labels": [readable_label(s) for s in labels], "weights": w.flatten().tolist()}


_ATTENTION_JS = (
    r"""
(function () {
  var VIRIDIS = [[68,1,84],[59,82,139],[33,145,140],[94,201,98],[253,231,37]];
  function color(x) {  // x in [0, 1] -> viridis
    x = Math.max(0, Math.min(1, x)) * (VIRIDIS.length - 1);
    var i = Math.min(Math.floor(x), VIRIDIS.length - 2), f = x - i, a = VIRIDIS[i], b = VIRIDIS[i + 1];
    return "rgb(" + [0, 1, 2].map(function (c) { return Math.round(a[c] + f * (b[c] - a[c])); }).join(",") + ")";
  }
  function setup(root) {
    if (root.getAttribute("data-ready")) return;
    root.setAttribute("data-ready", "1");
    var d = JSON.parse(root.querySelector("script[type='application/json']").textContent);
    var T = d.T, q = function (sel) { return root.querySelector(sel); };
    var lIn = q("select[name=layer]"), hIn = q("select[name=head]"), qIn = q("input[name=query]");
    var canvas = q("canvas"), ctx = canvas.getContext("2d");
    var cell = Math.max(1, Math.floor(canvas.width / T));  // whole pixels: no seams between cells
    canvas.width = canvas.height = cell * T;
    canvas.style.width = canvas.style.height = cell * T + "px";
    var seq = q(".lmc-seq"), spans = [];
    d.labels.forEach(function (s, t) {
      var span = document.createElement("span");
      span.textContent = s;
      span.title = "position " + t;
      span.addEventListener("click", function () { qIn.value = t; update(); });
      seq.appendChild(span);
      spans.push(span);
    });
    canvas.addEventListener("click", function (ev) {
      var r = canvas.getBoundingClientRect();
      qIn.value = Math.min(T - 1, Math.floor((ev.clientY - r.top) / r.height * T));
      update();
    });
    function w(l, h, i, j) { return d.weights[((l * d.heads + h) * T + i) * T + j] / d.scale; }
    function update() {
      var l = parseInt(lIn.value, 10), h = parseInt(hIn.value, 10), t = parseInt(qIn.value, 10);
      var i, j, row = [];
      ctx.clearRect(0, 0, canvas.width, canvas.height);
      for (i = 0; i < T; i++) for (j = 0; j < T; j++) {
        ctx.fillStyle = color(w(l, h, i, j) * 2);  // colour scale 0 .. 0.5, like the static figure
        ctx.fillRect(j * cell, i * cell, cell, cell);
      }
      ctx.strokeStyle = "#e4572e"; ctx.lineWidth = 2;
      ctx.strokeRect(1, t * cell, canvas.width - 2, cell);
      for (j = 0; j < T; j++) {
        var x = w(l, h, t, j);
        row.push(x);
        spans[j].style.background = j === t ? "transparent" : "rgba(58,110,165," + Math.min(1, 2 * x).toFixed(3) + ")";
        spans[j].style.outline = j === t ? "2px solid #e4572e" : "none";
        spans[j].style.color = 2 * x > 0.6 ? "#fff" : "";
      }
      var best = row.indexOf(Math.max.apply(null, row));
      q(".lmc-q").textContent = t + " (" + d.labels[t] + ")";
      q(".lmc-summary").textContent = "layer " + (l + 1) + ", head " + (h + 1) + ": position " + t + " (" +
        d.labels[t] + ") puts most weight, " + row[best].toFixed(3) + ", on position " + best + " (" + """
    r"""d.labels[best] + ")";
      root.setAttribute("data-row", JSON.stringify(row));
    }
    [lIn, hIn, qIn].forEach(function (el) { el.addEventListener("input", update); """
    r"""el.addEventListener("change", update); });
    update();
  }
  document.querySelectorAll("[id='__ID__']").forEach(setup);
})();
"""
)


def attention_explorer(weights: torch.Tensor, labels: Sequence[str], *, query: int | None = None,
                       layer_names: Sequence[str] | None = None, title: str = "", size: int = 360) -> HTML:
    """An interactive attention heatmap: pick layer, head and query position.

    ``weights`` ``(H, T, T)`` or ``(L, H, T, T)`` (rows are query positions and sum
    to 1), ``labels`` the ``T`` tokens. The figure draws the chosen head's ``T x T``
    map and shades the tokens by the weight the chosen query (default: the last)
    gives them; clicking a token or a heatmap row picks the query.

    >>> html = attention_explorer(torch.full((2, 3, 3), 1 / 3), ["a", "b", "c"]).data
    >>> 'data-lmcourse-interactive="attention"' in html and "<select" in html
    True
    """
    data = attention_data(weights, labels, query=query)
    payload = _dumps(data)
    eid = _element_id("attention", payload)
    L, H, T = data["layers"], data["heads"], data["T"]
    names = list(layer_names) if layer_names is not None else [f"layer {i + 1}" for i in range(L)]
    if len(names) != L:
        raise ValueError(f"got {len(names)} layer names for {L} layers")
    layer_opts = "".join(f'<option value="{i}">{_html.escape(n)}</option>' for i, n in enumerate(names))
    head_opts = "".join(f'<option value="{h}">head {h + 1}</option>' for h in range(H))
    html = (
        f"""{_STYLE}<div class="lmc-widget" id="{eid}" data-lmcourse-interactive="attention">
<div class="lmc-note">{_html.escape(title)}</div>
<label><select name="layer">{layer_opts}</select></label>
<label><select name="head">{head_opts}</select></label>
<label>query position <input type="range" name="query" min="0" max="{T - 1}" step="1" value="{data['query']}"> """
        f"""<span class="lmc-q"></span></label>
<div class="lmc-summary"></div>
<div class="lmc-seq"></div>
<canvas width="{size}" height="{size}" """
        f"""style="width:{size}px;height:{size}px;margin-top:6px;border:1px solid #ccc;"></canvas>
<div class="lmc-note">Rows: query position t; columns: key position s; colour: weight (0 to 0.5 and above). """
        f"""The outlined row is the chosen query; the tokens above are shaded by its weights.</div>
<script type="application/json">{payload}</script>
<script>{_ATTENTION_JS.replace("__ID__", eid)}</script>
</div>"""
    )
    return HTML(html)


LAW_DIGITS = 6  # significant digits of a loss law's numbers in the compute figure


def compute_data(law: LossLaw, *, log10_budget: float = 13.0, low: float = 11.0, high: float = 17.0,
                 points: Sequence[tuple[float, float]] = ()) -> dict:
    """The JSON-ready data that :func:`compute_explorer` embeds.

    The law's five numbers rounded to :data:`LAW_DIGITS` significant digits (the
    figure and any check of it use these), the slider's range and start (``log10``
    of the budget in FLOPs), and ``points``: measured ``(C, N)`` pairs (the IsoFLOP
    minima) drawn beside the fitted ``N*(C)``.
    """
    if not low < high or not low <= log10_budget <= high:
        raise ValueError(f"need low < high and low <= log10_budget <= high, got {low}, {high}, {log10_budget}")
    if min(law.E, law.A, law.alpha, law.B, law.beta) <= 0:
        raise ValueError(f"the law's numbers must be positive, got {law}")
    law_dict = {k: float(f"{getattr(law, k):.{LAW_DIGITS}g}") for k in ("E", "A", "alpha", "B", "beta")}
    return {"law": law_dict, "low": float(low), "high": float(high), "log10_budget": float(log10_budget),
            "points": [[float(f"{c:.4g}"), float(f"{n:.4g}")] for c, n in points]}


def rounded_law(data: dict) -> LossLaw:
    """The :class:`lmcourse.scaling_laws.LossLaw` a figure's data embeds (its numbers rounded)."""
    return LossLaw(**data["law"])


_COMPUTE_JS = (
    r"""
(function () {
  function optimum(w, C) {  // = lmcourse.scaling_laws.compute_optimal
    var a = w.alpha, b = w.beta, s = a + b;
    var G = Math.pow(a * w.A / (b * w.B), 1 / s);
    var N = G * Math.pow(C / 6, b / s), D = Math.pow(C / 6, a / s) / G;
    return [N, D];
  }
  function loss(w, N, D) { return w.E + w.A / Math.pow(N, w.alpha) + w.B / Math.pow(D, w.beta); }
  function fmt(x) { return x >= 1e3 ? x.toExponential(2).replace("e+", "e") : x.toPrecision(3); }
  function setup(root) {
    if (root.getAttribute("data-ready")) return;
    root.setAttribute("data-ready", "1");
    var d = JSON.parse(root.querySelector("script[type='application/json']").textContent), w = d.law;
    var q = function (sel) { return root.querySelector(sel); };
    var cIn = q("input[name=budget]"), canvas = q("canvas"), ctx = canvas.getContext("2d");
    var W = canvas.width, H = canvas.height, pad = 34;
    var nLo = Math.log10(optimum(w, Math.pow(10, d.low))[0]) - 1;
    var nHi = Math.log10(optimum(w, Math.pow(10, d.high))[0]) + 1;
    function update() {
      var lc = parseFloat(cIn.value), C = Math.pow(10, lc), o = optimum(w, C), N = o[0], D = o[1];
      var L = loss(w, N, D), lMax = L + 1.5, i, x, lx, curve = [];
      for (i = 0; i <= 200; i++) {  // the IsoFLOP curve: L(N, C / 6N) for N on a log axis
        lx = nLo + (nHi - nLo) * i / 200;
        var Ni = Math.pow(10, lx), Li = loss(w, Ni, C / (6 * Ni));
        curve.push([lx, Li]);
      }
      ctx.clearRect(0, 0, W, H);
      ctx.strokeStyle = "#999"; ctx.strokeRect(pad, 4, W - pad - 4, H - pad - 4);
      function px(lx) { return pad + (W - pad - 4) * (lx - nLo) / (nHi - nLo); }
      function py(l) { return 4 + (H - pad - 4) * (1 - (l - (L - 0.1)) / (lMax - (L - 0.1))); }
      ctx.strokeStyle = "#3a6ea5"; ctx.lineWidth = 2; ctx.beginPath();
      curve.forEach(function (p, j) {
        var yy = Math.max(4, Math.min(H - pad, py(p[1])));
        if (j === 0) ctx.moveTo(px(p[0]), yy); else ctx.lineTo(px(p[0]), yy);
      });
      ctx.stroke();
      ctx.fillStyle = "#e4572e"; ctx.beginPath();
      ctx.arc(px(Math.log10(N)), py(L), 5, 0, 2 * Math.PI); ctx.fill();
      ctx.fillStyle = "#444"; ctx.font = "11px sans-serif";
      for (x = Math.ceil(nLo); x <= nHi; x++) ctx.fillText("1e" + x, px(x) - 10, H - pad + 14);
      ctx.fillText("non-embedding parameters N (log scale)", pad + 40, H - 6);
      ctx.save(); ctx.translate(10, H / 2 + 40); ctx.rotate(-Math.PI / 2);
      ctx.fillText("loss, nats/char", 0, 0); ctx.restore();
      d.points.forEach(function (p) {  // measured IsoFLOP minima within a factor 2 of this budget
        if (Math.abs(Math.log10(p[0]) - lc) <= Math.log10(2)) {
          ctx.strokeStyle = "#222"; ctx.lineWidth = 1.5;
          ctx.strokeRect(px(Math.log10(p[1])) - 4, H - pad - 12, 8, 8);
        }
      });
      q(".lmc-c").textContent = fmt(C) + " FLOPs";
      q(".lmc-summary").textContent = "N* = " + fmt(N) + " parameters, D* = " + fmt(D) +
        " characters (" + (D / N).toFixed(0) + " per parameter); predicted loss " + L.toFixed(3) + " nats/char";
      root.setAttribute("data-optimum", JSON.stringify([N, D, L]));
    }
    cIn.addEventListener("input", update);
    update();
  }
  document.querySelectorAll("[id='__ID__']").forEach(setup);
})();
"""
)


def compute_explorer(law: LossLaw, *, log10_budget: float = 13.0, low: float = 11.0, high: float = 17.0,
                     points: Sequence[tuple[float, float]] = (), title: str = "", size: int = 420) -> HTML:
    """An interactive compute budget: the fitted law's ``N*``, ``D*`` and predicted loss as the reader moves ``C``.

    A slider sets ``log10 C``; the figure draws the law's IsoFLOP curve
    ``L(N, C / 6N)`` against ``N`` with its minimum (what
    :func:`lmcourse.scaling_laws.compute_optimal` returns, and the law's loss there)
    and prints ``N*``, ``D*``, ``D*/N*`` and the predicted loss. A small square on
    the ``N`` axis marks each measured minimum in ``points`` within a factor 2 of
    the budget.

    >>> from lmcourse.scaling_laws import chinchilla
    >>> html = compute_explorer(chinchilla(), log10_budget=20, low=18, high=24).data
    >>> 'data-lmcourse-interactive="compute"' in html and html.count("<input") == 1
    True
    """
    data = compute_data(law, log10_budget=log10_budget, low=low, high=high, points=points)
    payload = _dumps(data)
    eid = _element_id("compute", payload)
    html = (
        f"""{_STYLE}<div class="lmc-widget" id="{eid}" data-lmcourse-interactive="compute">
<div class="lmc-note">{_html.escape(title)}</div>
<label>compute budget C <input type="range" name="budget" min="{data['low']}" max="{data['high']}" """
        f"""step="0.05" value="{data['log10_budget']}"> <span class="lmc-c"></span></label>
<div class="lmc-summary"></div>
<canvas width="{size}" height="{size * 2 // 3}" """
        f"""style="width:{size}px;height:{size * 2 // 3}px;margin-top:6px;"></canvas>
<div class="lmc-note">Curve: the fitted law's loss of every split of C = 6ND (N on the axis, D = C/6N); """
        f"""dot: its minimum; squares: measured IsoFLOP minima near this budget.</div>
<script type="application/json">{payload}</script>
<script>{_COMPUTE_JS.replace("__ID__", eid)}</script>
</div>"""
    )
    return HTML(html)
