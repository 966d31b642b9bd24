/* mechscope feature pages: shade tokens by activation, show the value on hover, run "try a text".
   Loaded as a file (the pages' Content-Security-Policy allows no inline script); every text from
   the database or the model is inserted with textContent, never as HTML. */
(function () {
  "use strict";

  function shade(value, scale) {
    var x = scale > 0 ? Math.max(-1, Math.min(1, value / scale)) : 0;
    var r, g, b;
    if (x >= 0) { r = 255; g = Math.round(255 - 120 * x); b = Math.round(255 - 230 * x); }
    else { r = Math.round(255 + 190 * x); g = Math.round(255 + 120 * x); b = 255; }
    return "rgb(" + r + "," + g + "," + b + ")";
  }

  function paint(root) {
    root.querySelectorAll(".fwin").forEach(function (win) {
      var scale = parseFloat(win.dataset.scale) || 0;
      win.querySelectorAll(".ftok").forEach(function (tok) {
        tok.style.background = shade(parseFloat(tok.dataset.v), scale);
      });
    });
  }

  function hover() {
    var tip = document.getElementById("ftip");
    if (!tip) return;
    document.addEventListener("mouseover", function (ev) {
      var tok = ev.target.closest ? ev.target.closest(".ftok") : null;
      if (!tok) { tip.hidden = true; return; }
      tip.textContent = tok.textContent + "  " + tok.dataset.v;
      tip.hidden = false;
      var box = tok.getBoundingClientRect();
      tip.style.left = (window.scrollX + box.left) + "px";
      tip.style.top = (window.scrollY + box.bottom + 4) + "px";
    });
  }

  function visible(token) {
    var out = token.replace(/ /g, "\u2423").replace(/\n/g, "\u21b5").replace(/\t/g, "\u2192");
    return out.length ? out : "\u2205";
  }

  function windowRow(tokens, values, scale, label) {
    var row = document.createElement("div");
    row.className = "fwin";
    row.dataset.scale = String(scale);
    var head = document.createElement("span");
    head.className = "nval";
    head.textContent = label;
    row.appendChild(head);
    tokens.forEach(function (t, i) {
      var span = document.createElement("span");
      span.className = "ftok";
      span.textContent = visible(t);
      span.dataset.v = values[i].toPrecision(4);
      span.title = values[i].toPrecision(4);
      row.appendChild(span);
    });
    return row;
  }

  function infer() {
    var form = document.getElementById("infer-form");
    if (!form) return;
    var status = document.getElementById("infer-status");
    var results = document.getElementById("infer-results");
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var source = document.getElementById("infer-source").value;
      var body = {
        text: document.getElementById("infer-text").value,
        source: source,
        limit: parseInt(document.getElementById("infer-limit").value, 10) || 10
      };
      status.textContent = "running...";
      results.replaceChildren();
      fetch("/api/infer", {
        method: "POST", headers: {"Content-Type": "application/json"},
        body: JSON.stringify(body), credentials: "same-origin"
      }).then(function (resp) {
        return resp.json().then(function (data) { return {ok: resp.ok, data: data}; });
      }).then(function (r) {
        if (!r.ok) { status.textContent = "error: " + r.data.error; return; }
        status.textContent = r.data.features.length + " features, most active first";
        r.data.features.forEach(function (f) {
          var item = document.createElement("div");
          item.className = "finfer-feature";
          var link = document.createElement("a");
          link.href = "/feature/" + encodeURIComponent(source) + "/" + f.index;
          link.textContent = source + "/" + f.index;
          item.appendChild(link);
          var scale = Math.max.apply(null, f.values.map(Math.abs));
          item.appendChild(windowRow(r.data.tokens, f.values, scale, f.max.toFixed(3)));
          results.appendChild(item);
        });
        paint(results);
      }).catch(function (err) { status.textContent = "error: " + err; });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    paint(document);
    hover();
    infer();
  });
})();
