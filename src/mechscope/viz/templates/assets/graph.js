/* mechscope attribution-graph view: layered layout (rows: embeddings, layers, logits; columns:
   positions), node area by influence, hover details, click to pin, shift-click + "Group" to make
   a supernode, "Auto-group" to apply the groups computed from edge profiles. A feature's top
   examples from the feature database (msg-examples, keyed "LAYER_FEATURE") show in its hover
   and pinned entry, tokens shaded by activation; all text goes in through textContent. */
(function () {
  "use strict";
  var root = document.currentScript.closest(".msg-wrap");
  var data = JSON.parse(root.querySelector(".msg-data").textContent);
  var auto = JSON.parse(root.querySelector(".msg-groups").textContent);
  var examples = JSON.parse(root.querySelector(".msg-examples").textContent);
  var svg = root.querySelector(".msg-svg"), tip = root.querySelector(".msg-tip");
  var NS = "http://www.w3.org/2000/svg";
  var toks = data.metadata.prompt_tokens, nPos = toks.length;
  var byId = {}, pinned = {}, selected = {}, supernodes = [];
  var COLORS = {"cross layer transcoder": "#4c9be8", "mlp reconstruction error": "#a0a0a0",
                "embedding": "#6cc070", "logit": "#e8a33c"};
  function row(n) { return n.layer === "E" ? 0 : parseInt(n.layer, 10) + 1; }
  var maxRow = 0, cells = {};
  data.nodes.forEach(function (n) {
    byId[n.node_id] = n;
    maxRow = Math.max(maxRow, row(n));
    var key = row(n) + "|" + n.ctx_idx;
    (cells[key] = cells[key] || []).push(n);
  });
  var widest = 1;
  Object.keys(cells).forEach(function (k) { widest = Math.max(widest, cells[k].length); });
  var colW = Math.min(220, Math.max(70, widest * 16 + 10)), rowH = 46;
  var W = 70 + nPos * colW, H = 70 + (maxRow + 1) * rowH;
  svg.setAttribute("viewBox", "0 0 " + W + " " + H);
  var maxInf = 1e-12, maxW = 1e-12;
  data.nodes.forEach(function (n) { maxInf = Math.max(maxInf, n.node_influence || 0); });
  data.links.forEach(function (l) { maxW = Math.max(maxW, Math.abs(l.weight)); });
  Object.keys(cells).forEach(function (k) {
    var c = cells[k];
    c.forEach(function (n, i) {
      n._x = 70 + n.ctx_idx * colW + (i + 0.5) * (colW / c.length);
      n._y = H - 45 - row(n) * rowH;
      n._r = 3 + 9 * Math.sqrt((n.node_influence || 0) / maxInf);
    });
  });
  function el(name, attrs, parent) {
    var e = document.createElementNS(NS, name);
    Object.keys(attrs).forEach(function (a) { e.setAttribute(a, attrs[a]); });
    (parent || svg).appendChild(e);
    return e;
  }
  var gGroups = el("g", {}), gLinks = el("g", {}), gNodes = el("g", {});
  for (var r = 0; r <= maxRow; r++) {
    var label = r === 0 ? "emb" : (r === maxRow && data.nodes.some(function (n) {
      return n.feature_type === "logit" && row(n) === r; }) ? "logit" : "L" + (r - 1));
    el("text", {x: 4, y: H - 41 - r * rowH, "font-size": 11}).textContent = label;
  }
  toks.forEach(function (t, i) {
    el("text", {x: 70 + (i + 0.5) * colW, y: H - 8, "font-size": 11, "text-anchor": "middle"})
      .textContent = t;
  });
  var linkEls = data.links.map(function (l) {
    var s = byId[l.source], t = byId[l.target];
    var a = Math.abs(l.weight) / maxW, my = (s._y + t._y) / 2;
    var p = el("path", {"class": "msg-link", d: "M" + s._x + "," + s._y + " C" + s._x + "," + my +
      " " + t._x + "," + my + " " + t._x + "," + t._y, stroke: l.weight > 0 ? "#2f6fdf" : "#d23f31",
      "stroke-width": 0.4 + 3.5 * a, "stroke-opacity": 0.12 + 0.55 * a}, gLinks);
    p._l = l; p._base = 0.12 + 0.55 * a;
    return p;
  });
  var nodeEls = data.nodes.map(function (n) {
    var c = el("circle", {"class": "msg-node", cx: n._x, cy: n._y, r: n._r,
      fill: COLORS[n.feature_type] || "#888"}, gNodes);
    c._n = n;
    c.addEventListener("mouseenter", function (ev) { hover(n, ev, true); });
    c.addEventListener("mouseleave", function () { hover(n, null, false); });
    c.addEventListener("click", function (ev) {
      var box = ev.shiftKey ? selected : pinned;
      if (box[n.node_id]) { delete box[n.node_id]; } else { box[n.node_id] = true; }
      refresh();
    });
    return c;
  });
  function fmt(x) { return x === null || x === undefined ? "-" : (+x).toPrecision(3); }
  function describe(n) {
    return n.node_id + " (" + n.feature_type + ")\nlayer " + n.layer + ", position " + n.ctx_idx +
      " '" + toks[n.ctx_idx] + "'" + (n.clerp ? "\n" + n.clerp : "") +
      "\nactivation " + fmt(n.activation) + ", influence " + fmt(n.node_influence);
  }
  function exampleBlock(n) {
    var info = n.feature_type === "cross layer transcoder" &&
      examples[n.layer + "_" + n.feature_index];
    if (!info) { return null; }
    var box = document.createElement("div");
    box.className = "msg-examples-box";
    var head = document.createElement("div");
    head.textContent = info.source + " / " + info.index +
      (info.explanation ? ": " + info.explanation : "");
    box.appendChild(head);
    info.examples.forEach(function (e) {
      var line = document.createElement("div"), top = Math.max(Math.abs(e.value), 1e-12);
      line.className = "msg-example";
      e.tokens.forEach(function (t, i) {
        var span = document.createElement("span"), a = Math.max(0, e.values[i]) / top;
        span.textContent = t;
        span.title = fmt(e.values[i]);
        span.style.background = "rgba(255,140,0," + (0.75 * a).toFixed(3) + ")";
        if (i === e.position) { span.className = "msg-peak"; }
        line.appendChild(span);
      });
      box.appendChild(line);
    });
    return box;
  }
  function hover(n, ev, on) {
    linkEls.forEach(function (p) {
      var hit = p._l.source === n.node_id || p._l.target === n.node_id;
      p.setAttribute("stroke-opacity", on && hit ? 0.95 : visible(p) ? p._base : 0);
    });
    if (!on) { tip.style.display = "none"; return; }
    tip.textContent = describe(n);
    var block = exampleBlock(n);
    if (block) { tip.appendChild(block); }
    var box = root.getBoundingClientRect();
    tip.style.left = (ev.clientX - box.left + 12) + "px";
    tip.style.top = (ev.clientY - box.top + 12) + "px";
    tip.style.display = "block";
  }
  var linkType = root.querySelector(".msg-linktype");
  function visible(p) {
    if (linkType.value !== "pinned") { return true; }
    return !!(pinned[p._l.source] || pinned[p._l.target]);
  }
  function top(id, key, other) {
    return data.links.filter(function (l) { return l[key] === id; })
      .sort(function (a, b) { return Math.abs(b.weight) - Math.abs(a.weight); }).slice(0, 5)
      .map(function (l) { return l[other] + " " + fmt(l.weight); }).join(", ");
  }
  function refresh() {
    nodeEls.forEach(function (c) {
      c.classList.toggle("pinned", !!pinned[c._n.node_id]);
      c.classList.toggle("selected", !!selected[c._n.node_id]);
    });
    linkEls.forEach(function (p) { p.setAttribute("stroke-opacity", visible(p) ? p._base : 0); });
    var list = root.querySelector(".msg-pinned");
    list.textContent = "";
    Object.keys(pinned).forEach(function (id) {
      var li = document.createElement("li");
      li.textContent = describe(byId[id]) + "\nfrom: " + top(id, "target", "source") +
        "\nto: " + top(id, "source", "target");
      li.style.whiteSpace = "pre-line";
      var block = exampleBlock(byId[id]);
      if (block) { li.appendChild(block); }
      list.appendChild(li);
    });
    drawGroups();
  }
  function drawGroups() {
    gGroups.textContent = "";
    var list = root.querySelector(".msg-supernodes");
    list.textContent = "";
    supernodes.forEach(function (g) {
      var members = g.slice(1).map(function (id) { return byId[id]; }).filter(Boolean);
      if (!members.length) { return; }
      var x0 = Math.min.apply(null, members.map(function (n) { return n._x - n._r - 3; }));
      var x1 = Math.max.apply(null, members.map(function (n) { return n._x + n._r + 3; }));
      var y0 = Math.min.apply(null, members.map(function (n) { return n._y - n._r - 3; }));
      var y1 = Math.max.apply(null, members.map(function (n) { return n._y + n._r + 3; }));
      el("rect", {"class": "msg-group", x: x0, y: y0, width: x1 - x0, height: y1 - y0, rx: 4}, gGroups);
      el("text", {"class": "msg-glabel", x: x0, y: y0 - 2}, gGroups).textContent = g[0];
      var li = document.createElement("li");
      li.textContent = g[0] + ": " + g.slice(1).join(", ");
      list.appendChild(li);
    });
  }
  root.querySelector(".msg-group-btn").addEventListener("click", function () {
    var ids = Object.keys(selected);
    if (!ids.length) { return; }
    supernodes.push(["group " + (supernodes.length + 1)].concat(ids));
    selected = {};
    refresh();
  });
  root.querySelector(".msg-auto-btn").addEventListener("click", function () {
    supernodes = auto.map(function (g) { return g.slice(); });
    refresh();
  });
  root.querySelector(".msg-clear-btn").addEventListener("click", function () {
    supernodes = []; pinned = {}; selected = {};
    refresh();
  });
  linkType.addEventListener("change", refresh);
  supernodes = (data.qParams && data.qParams.supernodes) ? data.qParams.supernodes.slice() : [];
  (data.qParams && data.qParams.pinnedIds || []).forEach(function (id) { pinned[id] = true; });
  refresh();
})();
