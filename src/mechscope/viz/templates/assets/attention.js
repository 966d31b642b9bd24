(function () {
  "use strict";
  var me = document.currentScript;
  var root = me && me.closest ? me.closest(".msattn") : null;
  if (!root) { return; }
  var D = JSON.parse(root.querySelector("script.msattn-data").textContent);
  var T = D.tokens.length, L = D.layers.length, H = D.n_heads, S = D.scale;
  var st = { l: D.initial[0], h: D.initial[1], lockQ: D.initial[2], lockK: null,
             q: D.initial[2], k: null, grid: "layer", sqrt: false };
  var $ = function (sel) { return root.querySelector(sel); };
  var $$ = function (sel) { return Array.prototype.slice.call(root.querySelectorAll(sel)); };
  var qToks = $$(".msattn-q .msattn-tok"), kToks = $$(".msattn-k .msattn-tok");
  var layerSel = $("select.msattn-layer"), headSel = $("select.msattn-head");
  var readout = $(".msattn-readout"), gridEl = $(".msattn-grid");
  var big = $(".msattn-big canvas");

  function w(l, h, q, k) {
    var row = D.rows[l][h][q];
    return k < row.length ? row[k] / S : 0;
  }
  function rgb(v) {  // white -> #4285f4, as mechscope.viz.html.heat_color
    v = Math.max(0, Math.min(1, v));
    if (st.sqrt) { v = Math.sqrt(v); }  // shows weak weights; the numbers stay the weights
    return [Math.round(255 - 189 * v), Math.round(255 - 122 * v), Math.round(255 - 11 * v)];
  }
  function css(v) { var c = rgb(v); return "rgb(" + c[0] + "," + c[1] + "," + c[2] + ")"; }
  function name(l, h) { return "L" + D.layers[l] + "H" + h; }

  function paintThumb(canvas, l, h) {
    canvas.width = T; canvas.height = T;
    var ctx = canvas.getContext("2d"), img = ctx.createImageData(T, T);
    for (var q = 0; q < T; q++) {
      for (var k = 0; k < T; k++) {
        var c = rgb(w(l, h, q, k)), o = 4 * (q * T + k);
        img.data[o] = c[0]; img.data[o + 1] = c[1]; img.data[o + 2] = c[2]; img.data[o + 3] = 255;
      }
    }
    ctx.putImageData(img, 0, 0);
  }

  function buildGrid() {
    gridEl.innerHTML = "";
    var rows = st.grid === "all" ? L : 1, size = st.grid === "all" ? 30 : 64;
    gridEl.style.gridTemplateColumns = "repeat(" + H + ", max-content)";
    for (var r = 0; r < rows; r++) {
      var l = st.grid === "all" ? r : st.l;
      for (var h = 0; h < H; h++) {
        var fig = document.createElement("figure"), cv = document.createElement("canvas");
        cv.style.width = size + "px"; cv.style.height = size + "px";
        cv.dataset.l = l; cv.dataset.h = h; cv.title = name(l, h);
        paintThumb(cv, l, h);
        fig.appendChild(cv);
        if (st.grid !== "all" || r === 0 || h === 0) {
          var cap = document.createElement("figcaption");
          cap.textContent = st.grid === "all" ? (h === 0 ? "L" + D.layers[l] + " " : "") +
            (r === 0 ? "H" + h : "") : name(l, h);
          fig.appendChild(cap);
        }
        fig.addEventListener("click", pick.bind(null, l, h));
        gridEl.appendChild(fig);
      }
    }
    markGrid();
  }
  function markGrid() {
    $$(".msattn-grid canvas").forEach(function (cv) {
      var on = +cv.dataset.l === st.l && +cv.dataset.h === st.h;
      cv.classList.toggle("msattn-sel", on);
    });
  }
  function pick(l, h) {
    var rebuild = st.grid === "layer" && l !== st.l;
    st.l = l; st.h = h; layerSel.value = String(l); headSel.value = String(h);
    if (rebuild) { buildGrid(); } else { markGrid(); }
    update();
  }

  function colour(toks, values, on) {
    toks.forEach(function (el, i) {
      var v = values ? values[i] : 0;
      el.style.background = values ? css(v) : "";
      el.style.color = (st.sqrt ? Math.sqrt(v) : v) > 0.6 ? "#fff" : "";
      el.dataset.w = values ? v.toFixed(3) : "";
      el.classList.toggle("msattn-on", i === on);
    });
  }
  function update() {
    var l = st.l, h = st.h, i, vals = [];
    if (st.k !== null) {  // who attends to key k
      for (i = 0; i < T; i++) { vals.push(w(l, h, i, st.k)); }
      colour(qToks, vals, -1); colour(kToks, null, st.k);
      readout.textContent = name(l, h) + ": who attends to " + JSON.stringify(D.tokens[st.k]);
    } else if (st.q !== null) {  // where query q attends
      for (i = 0; i < T; i++) { vals.push(w(l, h, st.q, i)); }
      colour(kToks, vals, -1); colour(qToks, null, st.q);
      readout.textContent = name(l, h) + ": where " + JSON.stringify(D.tokens[st.q]) +
        " (position " + st.q + ") attends";
    } else {
      colour(qToks, null, -1); colour(kToks, null, -1);
      readout.textContent = name(l, h);
    }
    drawBig();
  }

  var geo = null;
  function drawBig() {
    var ctx = big.getContext("2d"), font = "12px ui-monospace, Menlo, monospace";
    ctx.font = font;
    var lab = 0;
    D.tokens.forEach(function (t) { lab = Math.max(lab, ctx.measureText(t).width); });
    var cell = Math.max(5, Math.min(28, Math.floor(560 / T)));
    lab = cell >= 8 ? Math.min(Math.ceil(lab) + 10, 160) : 4;  // no room for labels: hover
    var W = lab + cell * T + 4, Hh = lab + cell * T + 4, dpr = window.devicePixelRatio || 1;
    big.width = W * dpr; big.height = Hh * dpr;
    big.style.width = W + "px"; big.style.height = Hh + "px";
    ctx = big.getContext("2d"); ctx.scale(dpr, dpr); ctx.font = font;
    geo = { x0: lab, y0: lab, cell: cell };
    for (var q = 0; q < T; q++) {
      for (var k = 0; k < T; k++) {
        ctx.fillStyle = css(w(st.l, st.h, q, k));
        ctx.fillRect(lab + k * cell, lab + q * cell, cell, cell);
      }
    }
    ctx.strokeStyle = "#d0d7de"; ctx.strokeRect(lab, lab, cell * T, cell * T);
    ctx.fillStyle = "#1b1f24"; ctx.textBaseline = "middle";
    if (cell >= 8) {
      ctx.textAlign = "right";
      D.tokens.forEach(function (t, i) { ctx.fillText(t, lab - 4, lab + (i + 0.5) * cell, lab - 6); });
      ctx.save(); ctx.rotate(-Math.PI / 2); ctx.textAlign = "left";
      D.tokens.forEach(function (t, i) { ctx.fillText(t, -(lab - 4), lab + (i + 0.5) * cell, lab - 6); });
      ctx.restore();
    }
    ctx.lineWidth = 2; ctx.strokeStyle = "#d1242f";
    if (st.q !== null && st.k === null) { ctx.strokeRect(lab, lab + st.q * cell, cell * T, cell); }
    if (st.k !== null) { ctx.strokeRect(lab + st.k * cell, lab, cell, cell * T); }
  }
  function cellAt(ev) {
    var r = big.getBoundingClientRect();
    var k = Math.floor((ev.clientX - r.left - geo.x0) / geo.cell);
    var q = Math.floor((ev.clientY - r.top - geo.y0) / geo.cell);
    return q >= 0 && q < T && k >= 0 && k < T ? [q, k] : null;
  }

  qToks.forEach(function (el, i) {
    el.addEventListener("mouseenter", function () { st.q = i; st.k = null; update(); });
    el.addEventListener("click", function () { st.lockQ = i; st.lockK = null; });
  });
  kToks.forEach(function (el, i) {
    el.addEventListener("mouseenter", function () { st.k = i; update(); });
    el.addEventListener("click", function () { st.lockK = i; st.lockQ = null; });
  });
  $$(".msattn-strip").forEach(function (el) {
    el.addEventListener("mouseleave", function () { st.q = st.lockQ; st.k = st.lockK; update(); });
  });
  big.addEventListener("mousemove", function (ev) {
    var c = cellAt(ev);
    if (!c) { return; }
    st.q = c[0]; st.k = null; update();
    readout.textContent = name(st.l, st.h) + ": " + JSON.stringify(D.tokens[c[0]]) + " -> " +
      JSON.stringify(D.tokens[c[1]]) + " " + w(st.l, st.h, c[0], c[1]).toFixed(3);
  });
  big.addEventListener("click", function (ev) {
    var c = cellAt(ev);
    if (c) { st.lockQ = c[0]; st.lockK = null; }
  });
  big.addEventListener("mouseleave", function () { st.q = st.lockQ; st.k = st.lockK; update(); });
  layerSel.addEventListener("change", function () { pick(+layerSel.value, st.h); });
  headSel.addEventListener("change", function () { pick(st.l, +headSel.value); });
  $("input.msattn-sqrt").addEventListener("change", function (ev) {
    st.sqrt = ev.target.checked; buildGrid(); update();
  });
  $$("input.msattn-mode").forEach(function (el) {
    el.addEventListener("change", function () {
      if (el.checked) { st.grid = el.value; buildGrid(); }
    });
  });

  layerSel.value = String(st.l); headSel.value = String(st.h);
  buildGrid(); update();
  root.dataset.ready = "1";
})();
